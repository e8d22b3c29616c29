"""SentimentMLStrategy: the seed guide's hybrid API on a registered forecaster and the tiny
sentiment model; the answer must be signals.combine_signal of the forecast and the aggregate."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest

from sentiment import SentimentMLStrategy
from sentiment.aggregate import aggregate_scores
from sentiment.sources import NewsSettings
from signals import HybridWeights, combine_signal
from training.data import load_data
from training.features import sliding_windows
from training.tracking import load_model

AS_OF = pd.Timestamp("2024-03-01T12:00Z")
HEADLINES = [
    {"title": "Bitcoin ETF approved", "published_at": "2024-03-01T11:00:00Z"},
    {"title": "Exchange hacked, withdrawals halted", "published_at": "2024-03-01T00:00Z"},
]


@pytest.fixture(scope="module")
def sequences(forecaster_name):
    forecaster, _ = load_model(forecaster_name)
    candles = load_data("BTC/USDT", data_path="sample", days_back=10)
    return sliding_windows(candles.to_numpy(), forecaster.sequence_length)[-3:].tolist()


def test_hybrid_signal_is_the_rule_on_forecast_and_sentiment(analyzer, forecaster_name, sequences):
    strategy = SentimentMLStrategy(
        sentiment_weight=0.3,
        ml_weight=0.7,
        min_confidence=0.6,
        analyzer=analyzer,
        news=NewsSettings(api=None),
    )
    out = asyncio.run(
        strategy.get_hybrid_signal(
            symbol="BTC/USDT",
            sequences=sequences,
            model_name=forecaster_name,
            headlines=HEADLINES,
            as_of=AS_OF,
        )
    )
    # recompute independently: the forecaster's last window, the analyzer's scores
    forecaster, _ = load_model(forecaster_name)
    last = forecaster.predict(np.asarray(sequences)).iloc[-1]
    rows = analyzer.analyze([h["title"] for h in HEADLINES])
    score, confidence, n = aggregate_scores(
        [r["score"] for r in rows],
        [r["confidence"] for r in rows],
        [1.0, 12.0],
        strategy.news.aggregate,
    )
    expected = combine_signal(
        last["predicted_return"],
        last["lower"],
        last["upper"],
        last["prediction"],
        score,
        confidence,
        HybridWeights(),
    )
    assert out["signal"] == expected["signal"]
    for key in (
        "confidence",
        "price_prediction",
        "predicted_return",
        "ml_score",
        "sentiment_score",
        "weights",
    ):
        assert out[key] == pytest.approx(expected[key]), key
    assert out["sentiment"]["n_headlines"] == n == 2 and out["sentiment"]["source"] == "request"
    assert out["model_name"] == forecaster_name and out["model_version"] == 1
    assert out["signal"] in ("BUY", "SELL", "HOLD")


def test_no_news_is_stated_and_leaves_the_forecast_alone(analyzer, forecaster_name, sequences):
    strategy = SentimentMLStrategy(
        analyzer=analyzer, news=NewsSettings(api=None), min_confidence=0.0
    )
    out = asyncio.run(
        strategy.get_hybrid_signal(
            symbol="BTC/USDT", sequences=sequences, model_name=forecaster_name
        )
    )
    sentiment = out["sentiment"]
    assert sentiment["score"] == 0.0 and sentiment["confidence"] == 0.0
    assert sentiment["n_headlines"] == 0 and "no news source configured" in sentiment["note"]
    assert out["weights"] == {"ml": 1.0, "sentiment": 0.0}
    assert out["confidence"] == pytest.approx(abs(out["ml_score"]))
    if out["ml_score"] != 0:
        assert out["signal"] == ("BUY" if out["ml_score"] > 0 else "SELL")


def test_unknown_model_is_a_lookup_error(analyzer, sequences):
    strategy = SentimentMLStrategy(analyzer=analyzer)
    with pytest.raises(LookupError, match="no registered model 'nope'"):
        asyncio.run(strategy.get_hybrid_signal("BTC/USDT", sequences, model_name="nope"))
