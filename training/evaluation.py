"""Interval calibration and test metrics, always next to naive baselines on the same windows."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # matplotlib is imported by the plots alone: training paths import this module
    from matplotlib.figure import Figure


def conformal_quantile(scores: np.ndarray, confidence: float) -> float:
    """Split-conformal quantile: the ceil((n + 1) * confidence)-th smallest score.

    With exchangeable scores, |error| <= this value holds with probability >= confidence.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    if len(scores) == 0:
        raise ValueError("no calibration scores")
    rank = min(math.ceil((len(scores) + 1) * confidence), len(scores))
    return float(scores[rank - 1])


def _rmse(err: np.ndarray) -> float:
    return float(np.sqrt(np.mean(err**2)))


def _direction(pred: np.ndarray, actual: np.ndarray) -> float:
    moved = actual != 0
    return float(np.mean(np.sign(pred[moved]) == np.sign(actual[moved]))) if moved.any() else 0.0


def _covered(forecast: dict[str, np.ndarray], next_close: np.ndarray) -> np.ndarray:
    return (next_close >= forecast["lower"]) & (next_close <= forecast["upper"])


def coverage_by_month(
    times: pd.DatetimeIndex, next_close: np.ndarray, forecast: dict[str, np.ndarray]
) -> pd.DataFrame:
    """Share of actual next closes inside the calibrated interval per calendar month.

    A single coverage number can hide months of calm (too wide) and months of turmoil (too
    narrow); per month shows whether the interval holds when the market changes.

    Args:
        times: each target bar's time (the month it falls in).
        next_close: the actual next closes.
        forecast: Forecaster.forecast output for the same windows.

    Returns:
        One row per month, in order: month ("2025-03"), bars, coverage (0..1).
    """
    frame = pd.DataFrame(
        {
            "month": pd.DatetimeIndex(times).strftime("%Y-%m"),
            "covered": _covered(forecast, next_close),
        }
    )
    grouped = frame.groupby("month", sort=True)["covered"]
    return pd.DataFrame(
        {"bars": grouped.size(), "coverage": grouped.mean().astype(float)}
    ).reset_index()


def forecast_metrics(
    forecast: dict[str, np.ndarray],
    next_close: np.ndarray,
    last_return: np.ndarray,
    times: pd.DatetimeIndex | None = None,
) -> dict[str, float]:
    """Test metrics of a forecast against the random walk (zero return) and last return.

    Args:
        forecast: Forecaster.forecast output for the test windows.
        next_close: the actual next closes.
        last_return: each window's last simple return (the "last return" baseline).
        times: the target bars' times; given, adds the lowest and highest monthly interval
            coverage (coverage_min_month, coverage_max_month).
    """
    actual = next_close / forecast["last_close"] - 1.0
    pred = forecast["predicted_return"]
    covered = _covered(forecast, next_close)
    rmse = _rmse(pred - actual)
    rmse_rw = _rmse(actual)
    monthly = {}
    if times is not None:
        coverage = coverage_by_month(times, next_close, forecast)["coverage"]
        monthly = {"coverage_min_month": coverage.min(), "coverage_max_month": coverage.max()}
    return {
        "rmse": rmse,
        "mae": float(np.mean(np.abs(pred - actual))),
        "directional_accuracy": _direction(pred, actual),
        "rmse_random_walk": rmse_rw,
        "mae_random_walk": float(np.mean(np.abs(actual))),
        "rmse_last_return": _rmse(last_return - actual),
        "directional_accuracy_last_return": _direction(last_return, actual),
        "rmse_ratio_vs_random_walk": rmse / rmse_rw if rmse_rw > 0 else float("nan"),
        "interval_coverage": float(np.mean(covered)),
        "interval_mean_width_pct": float(
            np.mean((forecast["upper"] - forecast["lower"]) / forecast["last_close"]) * 100
        ),
        **{k: float(v) for k, v in monthly.items()},
    }


def plot_losses(history: dict) -> Figure:
    """Train and validation loss per epoch."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(history["train_loss"], label="train")
    ax.plot(history["val_loss"], label="validation")
    ax.axvline(history["best_epoch"][0], color="grey", ls=":", label="best epoch")
    ax.set(xlabel="epoch", ylabel="Huber loss (volatility units)", title="Loss curves")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_forecast(
    times: pd.DatetimeIndex,
    next_close: np.ndarray,
    forecast: dict[str, np.ndarray],
    confidence: float,
    monthly: pd.DataFrame | None = None,
) -> Figure:
    """The test split in return space, where a forecast's skill (or its lack) shows.

    Top: actual and predicted next-bar returns with the calibrated interval as a band. Bottom
    left: predicted against actual return (a skilful forecast leans along the diagonal).
    Bottom right: the share of actual returns inside the interval per month against the
    nominal level.

    Args:
        times: each target bar's time.
        next_close: the actual next closes.
        forecast: Forecaster.forecast output for the same windows.
        confidence: the interval's nominal coverage.
        monthly: coverage_by_month's table (computed when None).
    """
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    last = forecast["last_close"]
    actual = (next_close / last - 1.0) * 100
    pred = forecast["predicted_return"] * 100
    lower, upper = (forecast["lower"] / last - 1.0) * 100, (forecast["upper"] / last - 1.0) * 100
    if monthly is None:
        monthly = coverage_by_month(times, next_close, forecast)
    covered = float(np.mean(_covered(forecast, next_close)))

    fig = Figure(figsize=(11, 7))
    # fixed margins: tight_layout would lay the text out twice, a third of the plot's cost
    grid = fig.add_gridspec(
        2,
        2,
        height_ratios=(1.1, 1),
        width_ratios=(1, 1.3),
        hspace=0.32,
        wspace=0.18,
        left=0.06,
        right=0.985,
        top=0.95,
        bottom=0.1,
    )
    series, scatter, months = (
        fig.add_subplot(grid[0, :]),
        fig.add_subplot(grid[1, 0]),
        fig.add_subplot(grid[1, 1]),
    )
    series.fill_between(
        times,
        lower,
        upper,
        alpha=0.25,
        lw=0,
        label=f"{confidence:.0%} interval ({covered:.1%} hit)",
    )
    series.plot(times, actual, lw=0.6, color="black", alpha=0.7, label="actual")
    series.plot(times, pred, lw=1.0, color="tab:red", label="predicted")
    series.axhline(0.0, color="grey", lw=0.6)
    locator = mdates.AutoDateLocator()
    series.xaxis.set_major_locator(locator)
    series.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    series.set(title="Test split: next-bar return", ylabel="return %")
    series.legend(loc="upper left", fontsize=8, ncols=3)

    hits = _direction(pred, actual)
    corr = np.corrcoef(pred, actual)[0, 1] if np.std(pred) > 0 and np.std(actual) > 0 else 0.0
    scatter.scatter(pred, actual, s=4, alpha=0.35, lw=0)
    scatter.axhline(0.0, color="grey", lw=0.6)
    scatter.axvline(0.0, color="grey", lw=0.6)
    scatter.set(
        title=f"Predicted vs actual (corr {corr:.2f}, direction {hits:.0%})",
        xlabel="predicted return %",
        ylabel="actual return %",
    )

    x = np.arange(len(monthly))
    bars = months.bar(x, monthly["coverage"] * 100, alpha=0.8, label="actual in interval")
    months.bar_label(bars, [f"{n} bars" for n in monthly["bars"]], fontsize=7)
    months.axhline(confidence * 100, color="tab:red", ls="--", lw=1, label="nominal")
    months.set_xticks(x, monthly["month"], fontsize=7, rotation=45 if len(x) > 6 else 0)
    low = min(float(monthly["coverage"].min()) * 100, confidence * 100)
    months.set(
        title="Interval coverage per month", ylabel="% of bars", ylim=(max(low - 10, 0), 102)
    )
    months.legend(loc="lower left", fontsize=8)
    return fig
