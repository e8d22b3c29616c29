"""The hybrid strategy for `backtest.BacktraderEngine`: the registered forecaster's per-bar
forecast blended with news sentiment by `signals.hybrid_series`, the API's rule bar by bar.

At bar t (decided at its close, filled at t+1's open) sentiment uses only headlines published
strictly before bar t closed (`sentiment.aggregate.sentiment_series`); forecasts use only the
window ending at bar t (`MLBacktraderStrategy.forecasts`: precomputed, or one batched call).
"""

from __future__ import annotations

from types import NoneType

import numpy as np
import pandas as pd

from backtest.strategies import MLBacktraderStrategy
from sentiment.aggregate import AggregateSettings, sentiment_series
from sentiment.model import SentimentAnalyzer
from signals import BUY, HOLD, SELL, HybridWeights, hybrid_series

SIGNAL_COLUMNS = (
    "predicted_return",
    "ml_score",
    "sentiment_score",
    "sentiment_confidence",
    "n_headlines",
    "combined_score",
    "confidence",
    "signal",
)


def bar_close_times(index: pd.DatetimeIndex, interval: str | None = None) -> pd.DatetimeIndex:
    """Close time of each bar: its open time (the index) plus the bar interval (given, or the
    most common spacing of the index)."""
    if interval:
        from training.validation import interval_to_offset

        step = pd.Timedelta(interval_to_offset(interval))
    else:
        step = index.to_series().diff().mode().iloc[0]
    return index + step


def score_headlines(headlines: pd.DataFrame, analyzer: SentimentAnalyzer | None) -> pd.DataFrame:
    """published_at (UTC), score, confidence per headline; scores only those lacking them.

    Args:
        headlines: columns published_at and title, or published_at, score and confidence.
        analyzer: the model for unscored headlines (default `SentimentAnalyzer.from_default()`).
    """
    if "published_at" not in headlines.columns:
        raise ValueError("headlines need a published_at column (UTC times)")
    published = pd.to_datetime(headlines["published_at"], utc=True)
    if {"score", "confidence"} <= set(headlines.columns):
        scores = headlines["score"].to_numpy(float), headlines["confidence"].to_numpy(float)
    elif "title" in headlines.columns:
        analyses = (analyzer or SentimentAnalyzer.from_default()).analyze(
            headlines["title"].tolist()
        )
        scores = (
            np.array([a["score"] for a in analyses]),
            np.array([a["confidence"] for a in analyses]),
        )
    else:
        raise ValueError("headlines need a title column, or score and confidence columns")
    return pd.DataFrame(
        {"published_at": published.to_numpy(), "score": scores[0], "confidence": scores[1]}
    )


def hybrid_signals(
    forecast: dict[str, np.ndarray], sentiment: pd.DataFrame, weights: HybridWeights
) -> pd.DataFrame:
    """The hybrid rule for every bar; bars without a forecast get HOLD.

    Args:
        forecast: per-bar forecasts (predicted_return, lower_return, upper_return).
        sentiment: sentiment_series output for the same bars.
        weights: the blend.
    """
    score, confidence = sentiment["score"].to_numpy(float), sentiment["confidence"].to_numpy(float)
    rule = hybrid_series(
        forecast["predicted_return"],
        forecast["lower_return"],
        forecast["upper_return"],
        score,
        confidence,
        weights,
    )
    columns = {
        "predicted_return": forecast["predicted_return"],
        "ml_score": rule["ml_score"],
        "sentiment_score": score,
        "sentiment_confidence": confidence,
        "n_headlines": sentiment["n_headlines"].to_numpy(),
        "combined_score": rule["combined_score"],
        "confidence": rule["confidence"],
        "signal": rule["signal"],
    }
    return pd.DataFrame(columns, index=sentiment.index)[list(SIGNAL_COLUMNS)]


class HybridBacktraderStrategy(MLBacktraderStrategy):
    """MLBacktraderStrategy that trades the hybrid signal instead of the raw forecast.

    Params (besides MLBacktraderStrategy's model, history, position and cost params):
        headlines: DataFrame of published_at (UTC) and title (or pre-computed score and
            confidence); None trades on the forecast alone (sentiment confidence 0).
        analyzer: SentimentAnalyzer for unscored headlines (default: the registered one).
        sentiment_weight, ml_weight, min_confidence: the hybrid rule (signals).
        half_life_hours, max_age_hours, evidence_k: the sentiment aggregate.
        bar_interval: e.g. "1h"; default inferred from the candles' spacing.
    A BUY enters long (or closes a short); a SELL closes a long (or enters a short where the
    engine allows shorting); HOLD keeps the position.
    """

    params = (
        ("headlines", None),
        ("analyzer", None),
        ("sentiment_weight", 0.3),
        ("ml_weight", 0.7),
        ("min_confidence", 0.6),
        ("half_life_hours", AggregateSettings.half_life_hours),
        ("max_age_hours", AggregateSettings.max_age_hours),
        ("evidence_k", AggregateSettings.evidence_k),
        ("bar_interval", ""),
    )
    param_types = {
        **MLBacktraderStrategy.param_types,
        "headlines": (pd.DataFrame, NoneType),
        "analyzer": (SentimentAnalyzer, NoneType),
    }

    def start(self) -> None:
        candles = self.candles()
        forecast = self.forecasts(candles)
        settings = AggregateSettings(
            self.p.half_life_hours, self.p.max_age_hours, self.p.evidence_k
        )
        close = bar_close_times(candles.index, self.p.bar_interval or None)
        scored = pd.DataFrame(
            {"published_at": pd.to_datetime([], utc=True), "score": [], "confidence": []}
        )
        news = self.p.headlines
        if news is not None and "published_at" not in news.columns:
            raise ValueError("headlines need a published_at column (UTC times)")
        if news is not None and len(news):
            published = pd.to_datetime(news["published_at"], utc=True)
            # Only headlines that can reach some bar's window are worth scoring.
            window = pd.Timedelta(hours=settings.max_age_hours)
            news = news[(published >= close[0] - window) & (published < close[-1])]
            if len(news):
                scored = score_headlines(news, self.p.analyzer)
        sentiment = sentiment_series(
            close,
            pd.DatetimeIndex(scored["published_at"]),
            scored["score"].to_numpy(float),
            scored["confidence"].to_numpy(float),
            settings,
        )
        weights = HybridWeights(self.p.sentiment_weight, self.p.ml_weight, self.p.min_confidence)
        self.signals = hybrid_signals(forecast, sentiment, weights)
        self.signal_codes = self.signals["signal"].to_numpy()
        self.signal_confidence = self.signals["confidence"].to_numpy()
        self.read_costs()

    def next(self) -> None:
        bar = len(self) - 1
        signal, confidence = self.signal_codes[bar], self.signal_confidence[bar]
        if self.order is not None or signal == HOLD:
            return
        held = self.position.size
        if (held > 0 and signal == SELL) or (held < 0 and signal == BUY):
            self.order = self.close()
        elif held == 0 and (signal == BUY or self.allow_short):
            fraction = self.p.position_size
            if self.p.scale_by_confidence:
                fraction *= confidence
            size = fraction * self.broker.getvalue() / (self.data.close[0] * self.cost_factor)
            if size > 0:
                self.order = self.buy(size=size) if signal == BUY else self.sell(size=size)
