"""`SentimentMLStrategy`: the hybrid signal from a registered price forecaster and news
sentiment, by the rule in `signals` (the same function the HTTP API calls)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pandas as pd

from sentiment.model import SentimentAnalyzer
from sentiment.sources import NewsFileCache, NewsSettings, find_headlines, symbol_sentiment
from signals import HybridWeights, combine_signal
from training.bundle import Forecaster


class SentimentMLStrategy:
    """Blends a forecaster's last-window forecast with the symbol's news sentiment.

    Args:
        sentiment_weight: weight of sentiment at full sentiment confidence.
        ml_weight: weight of the forecast.
        min_confidence: below this blended confidence the signal is HOLD.
        analyzer: the sentiment model; default `SentimentAnalyzer.from_default()` on first use.
        news: where headlines come from when a call passes none.
    """

    def __init__(
        self,
        sentiment_weight: float = 0.3,
        ml_weight: float = 0.7,
        min_confidence: float = 0.6,
        analyzer: SentimentAnalyzer | None = None,
        news: NewsSettings | None = None,
    ) -> None:
        self.weights = HybridWeights(sentiment_weight, ml_weight, min_confidence)
        self.news = news or NewsSettings()
        self._analyzer = analyzer
        self._files = NewsFileCache()
        self._forecasters: dict[tuple[str, str], Forecaster] = {}
        self._lock = threading.Lock()

    @property
    def analyzer(self) -> SentimentAnalyzer:
        with self._lock:
            if self._analyzer is None:
                self._analyzer = SentimentAnalyzer.from_default()
            return self._analyzer

    def forecaster(self, model_name: str, version: str | int = "latest") -> tuple[Forecaster, int]:
        """The registered forecaster and its version number (cached per resolved version)."""
        from training.registry import resolve_version
        from training.tracking import load_model

        key = (model_name, str(resolve_version(model_name, version).version))
        with self._lock:
            if key not in self._forecasters:
                self._forecasters[key], _ = load_model(*key)
            return self._forecasters[key], int(key[1])

    def sentiment(self, symbol: str, headlines=None, as_of: pd.Timestamp | None = None) -> dict:
        """Aggregate sentiment of the given headlines, or of the configured news sources."""
        found = find_headlines(symbol, headlines, self.news, self._files)
        return symbol_sentiment(found, self.analyzer.analyze, self.news.aggregate, as_of)

    def signal(
        self,
        symbol: str,
        sequences,
        model_name: str,
        headlines=None,
        model_version: str | int = "latest",
        as_of: pd.Timestamp | None = None,
    ) -> dict:
        """The blocking version of `get_hybrid_signal`."""
        forecaster, version = self.forecaster(model_name, model_version)
        windows = np.asarray(sequences, dtype=np.float64)
        last = forecaster.predict(windows).iloc[-1]  # the most recent window decides
        sentiment = self.sentiment(symbol, headlines, as_of)
        out = combine_signal(
            last["predicted_return"],
            last["lower"],
            last["upper"],
            last["prediction"],
            sentiment["score"],
            sentiment["confidence"],
            self.weights,
        )
        return {
            "symbol": symbol,
            **out,
            "sentiment": sentiment,
            "model_name": model_name,
            "model_version": version,
        }

    async def get_hybrid_signal(
        self,
        symbol: str,
        sequences,
        model_name: str = "lstm_price_forecast",
        headlines=None,
        model_version: str | int = "latest",
        as_of: pd.Timestamp | None = None,
    ) -> dict:
        """BUY/SELL/HOLD for the last of `sequences` ([n, T, 5] raw OHLCV windows).

        Returns:
            signal, confidence, price_prediction, predicted_return, sentiment_score, ml_score,
            weights (as used), configured_weights, sentiment (the aggregate), model name and
            version; see `signals` for the rule.
        """
        return await asyncio.to_thread(
            self.signal, symbol, sequences, model_name, headlines, model_version, as_of
        )
