"""Strategies: the ML forecaster strategy, and a no-op one that measures the bar loop alone.

MLBacktraderStrategy consumes a precomputed forecast series: given one (`forecast`, e.g. from
`forecast_table`) or made in one batched call before the bar loop. Bar t's forecast comes from
the window of the sequence_length bars ending at t, so no decision sees a later candle, and
`next` only looks the precomputed numbers up. How sure a forecast is comes from
`signals.directional_confidence`, the rule the API and the hybrid signal use.
"""

from __future__ import annotations

from types import NoneType

import backtrader as bt
import numpy as np
import pandas as pd

from signals import directional_confidence
from training.bundle import Forecaster
from training.features import sliding_windows
from training.validation import OHLCV_COLUMNS, validate_ohlcv

FORECAST_COLUMNS = ("predicted_return", "lower_return", "upper_return", "confidence")


class NotEnoughBarsError(ValueError):
    """Raised when there are too few candles for the model's sequence length."""


class NoTradeStrategy(bt.Strategy):
    """Does nothing: the cost of the bar loop alone."""

    def next(self) -> None:
        pass


class MLBacktraderStrategy(bt.Strategy):
    """Trades a registered forecaster's next-bar return forecasts.

    Params:
        model_name, model_version: the registered model (version number, alias or "latest"),
            loaded with training.tracking.load_model, the bundle the API serves.
        forecaster: a Forecaster object to use instead of a registry lookup.
        forecast: precomputed per-bar forecasts (`forecast_table`) indexed by bar time and
            covering every bar of the data; no model is loaded (walk-forward passes these).
        history: candles just before the backtest data; their last sequence_length - 1 bars
            give the first bars of the data full windows (they are never traded).
        entry_threshold: extra predicted return required above the round-trip cost
            2 * (commission + slippage) before entering.
        exit_threshold: a long exits when the predicted return drops below this (a short when
            it rises above minus this).
        min_confidence: skip entries whose signals.directional_confidence is below this (0..1).
        position_size: fraction of portfolio value to commit, in (0, 1], net of fees.
        scale_by_confidence: multiply position_size by 2 * confidence - 1.
    Shorts are entered only when the engine allows shorting.
    """

    params = (
        ("model_name", "lstm_price_forecast"),
        ("model_version", "latest"),
        ("forecaster", None),
        ("forecast", None),
        ("history", None),
        ("entry_threshold", 0.0),
        ("exit_threshold", 0.0),
        ("min_confidence", 0.0),
        ("position_size", 0.95),
        ("scale_by_confidence", False),
    )
    param_types = {
        "model_version": (str, int),
        "forecaster": (Forecaster, NoneType),
        "forecast": (pd.DataFrame, NoneType),
        "history": (pd.DataFrame, NoneType),
    }

    def __init__(self) -> None:
        if not 0.0 < self.p.position_size <= 1.0:
            raise ValueError(
                f"MLBacktraderStrategy position_size must be in (0, 1], got {self.p.position_size}"
            )
        if not 0.0 <= self.p.min_confidence <= 1.0:
            raise ValueError(
                f"MLBacktraderStrategy min_confidence must be in [0, 1], "
                f"got {self.p.min_confidence}"
            )
        self.order = None

    def start(self) -> None:
        forecast = self.forecasts(self.candles())
        self.predicted_return = forecast["predicted_return"]
        self.confidence = forecast["confidence"]
        self.read_costs()

    def forecasts(self, candles: pd.DataFrame) -> dict[str, np.ndarray]:
        """Per-bar forecasts: the `forecast` param's rows for these bars, else the model's."""
        if self.p.forecast is not None:
            return align_forecast(self.p.forecast, candles.index)
        return precompute_forecasts(self.load_model(), candles, self.p.history)

    def load_model(self) -> Forecaster:
        """The `forecaster` param, else the registered model; refuses multi-asset models."""
        forecaster = self.p.forecaster
        if forecaster is None:
            from training.tracking import load_model

            forecaster, _ = load_model(self.p.model_name, self.p.model_version)
        if not hasattr(forecaster, "forecast"):
            raise TypeError(
                f"registered model {self.p.model_name!r} is a {type(forecaster).__name__}, "
                "not a price forecaster"
            )
        if len(forecaster.symbols) != 1:
            raise ValueError(
                f"the model forecasts from {len(forecaster.symbols)} symbols "
                f"{list(forecaster.symbols)}; the backtester feeds one symbol"
            )
        return forecaster

    def candles(self) -> pd.DataFrame:
        """The feed's whole DataFrame; only windows ending at or before a bar may be used."""
        candles = getattr(self.data, "candles", None)
        if candles is None:
            raise TypeError("MLBacktraderStrategy runs on BacktraderEngine's CandleFeed")
        return candles

    def read_costs(self) -> None:
        """Fee hurdle and sizing factor from the engine's commission and slippage."""
        comminfo = self.broker.getcommissioninfo(self.data)
        commission, slippage = comminfo.p.commission, self.broker.p.slip_perc
        self.hurdle = 2.0 * (commission + slippage) + self.p.entry_threshold
        self.cost_factor = (1.0 + commission) * (1.0 + slippage)
        self.allow_short = bool(getattr(self.broker.p, "allow_short", False))

    def notify_order(self, order) -> None:
        if not order.alive():
            self.order = None

    def next(self) -> None:
        bar = len(self) - 1
        self.decide(self.predicted_return[bar], self.confidence[bar])

    def decide(self, predicted: float, confidence: float) -> None:
        """Enter, exit or hold on this bar's forecast (orders fill at the next open)."""
        if self.order is not None or np.isnan(predicted):
            return
        held = self.position.size
        if held > 0 and predicted < self.p.exit_threshold:
            self.order = self.close()
        elif held < 0 and predicted > -self.p.exit_threshold:
            self.order = self.close()
        elif held == 0 and confidence >= self.p.min_confidence:
            fraction = self.p.position_size
            if self.p.scale_by_confidence:
                fraction *= max(2.0 * confidence - 1.0, 0.0)
            size = fraction * self.broker.getvalue() / (self.data.close[0] * self.cost_factor)
            if size <= 0:
                return
            if predicted > self.hurdle:
                self.order = self.buy(size=size)
            elif self.allow_short and predicted < -self.hurdle:
                self.order = self.sell(size=size)


def precompute_forecasts(
    forecaster: Forecaster, candles: pd.DataFrame, history: pd.DataFrame | None = None
) -> dict[str, np.ndarray]:
    """Forecasts for every bar of `candles` in one batched call.

    Bar i's forecast uses the window of sequence_length bars ending at bar i (drawn from
    `history` for the first bars when given); bars without a full window get NaN.

    Returns:
        Arrays of len(candles): predicted_return, lower_return, upper_return, confidence.
    """
    t = forecaster.sequence_length
    context = np.empty((0, len(OHLCV_COLUMNS)))
    if history is not None:
        history = validate_ohlcv(history, source="strategy history")
        if len(history) and history.index[-1] >= candles.index[0]:
            raise ValueError(
                f"history must end before the backtest data starts ({candles.index[0]}); "
                f"it ends at {history.index[-1]}"
            )
        context = history.to_numpy(dtype=np.float64)[max(len(history) - (t - 1), 0) :]
    values = np.concatenate([context, candles.to_numpy(dtype=np.float64)])
    if len(values) < t + 1:
        raise NotEnoughBarsError(
            f"{len(candles)} bars (+{len(context)} of history) is too few for the model's "
            f"sequence_length {t}: need at least {t + 1 - len(context)} bars to forecast and "
            "trade once; load more data"
        )
    out = forecaster.forecast(sliding_windows(values, t))
    last = out["last_close"]
    first = t - 1 - len(context)  # candles bar of the first full window
    result = {}
    for key, series in (
        ("predicted_return", out["predicted_return"]),
        ("lower_return", out["lower"] / last - 1.0),
        ("upper_return", out["upper"] / last - 1.0),
    ):
        full = np.full(len(candles), np.nan)
        full[first:] = series
        result[key] = full
    result["confidence"] = directional_confidence(
        result["predicted_return"], result["lower_return"], result["upper_return"]
    )
    return result


def forecast_table(forecaster: Forecaster, candles: pd.DataFrame) -> pd.DataFrame:
    """`precompute_forecasts` as a DataFrame indexed by bar time: the `forecast` parameter of
    MLBacktraderStrategy, which can then backtest any stretch of these bars without a model."""
    return pd.DataFrame(precompute_forecasts(forecaster, candles), index=candles.index)


def align_forecast(forecast: pd.DataFrame, index: pd.DatetimeIndex) -> dict[str, np.ndarray]:
    """The rows of a `forecast_table` for the bars in `index`, as arrays per column.

    Raises:
        ValueError: a column is missing, or some bar has no row.
    """
    missing = [c for c in FORECAST_COLUMNS if c not in forecast.columns]
    if missing:
        raise ValueError(f"forecast lacks columns {missing}; make it with forecast_table")
    absent = index.difference(forecast.index)
    if len(absent):
        raise ValueError(
            f"forecast has no row for {len(absent)} of the {len(index)} bars (first {absent[0]}); "
            "make it with forecast_table over the backtest data"
        )
    rows = forecast.loc[index]
    return {c: rows[c].to_numpy(dtype=np.float64) for c in FORECAST_COLUMNS}
