"""Interval calibration and test metrics, always next to naive baselines on the same windows."""

from __future__ import annotations

import math

import numpy as np


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


def forecast_metrics(
    forecast: dict[str, np.ndarray], next_close: np.ndarray, last_return: np.ndarray
) -> dict[str, float]:
    """Test metrics of a forecast against the random walk (zero return) and last return.

    Args:
        forecast: Forecaster.forecast output for the test windows.
        next_close: the actual next closes.
        last_return: each window's last simple return (the "last return" baseline).
    """
    actual = next_close / forecast["last_close"] - 1.0
    pred = forecast["predicted_return"]
    covered = (next_close >= forecast["lower"]) & (next_close <= forecast["upper"])
    rmse = _rmse(pred - actual)
    rmse_rw = _rmse(actual)
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
    }


def plot_losses(history: dict):
    """Train and validation loss per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(history["train_loss"], label="train")
    ax.plot(history["val_loss"], label="validation")
    ax.axvline(history["best_epoch"][0], color="grey", ls=":", label="best epoch")
    ax.set(xlabel="epoch", ylabel="Huber loss (volatility units)", title="Loss curves")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_predictions(times, next_close: np.ndarray, forecast: dict, last_n: int = 300):
    """Predicted vs actual next close with the calibrated interval, over the last test bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sl = slice(-last_n, None)
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.fill_between(
        times[sl],
        forecast["lower"][sl],
        forecast["upper"][sl],
        alpha=0.25,
        label="calibrated interval",
    )
    ax.plot(times[sl], next_close[sl], lw=1, label="actual next close")
    ax.plot(times[sl], forecast["prediction"][sl], lw=1, label="predicted next close")
    ax.set(title="Test split: predicted vs actual", ylabel="price")
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig
