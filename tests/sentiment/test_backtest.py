"""The hybrid strategy in BacktraderEngine: at each bar only headlines published before the bar
closed count."""

from __future__ import annotations

import pandas as pd
import pytest

from backtest import BacktraderEngine
from backtest.hybrid_strategy import HybridBacktraderStrategy, bar_close_times
from training.data import load_data

BULLISH = {"score": 1.0, "confidence": 1.0}


@pytest.fixture(scope="module")
def candles():
    return load_data("BTC/USDT", data_path="sample", days_back=8)  # ~190 hourly bars


def _run(candles, forecaster_name, headlines, **params):
    return BacktraderEngine().run_backtest(
        candles,
        HybridBacktraderStrategy,
        {
            "model_name": forecaster_name,
            "headlines": headlines,
            "sentiment_weight": 0.9,
            "ml_weight": 0.1,
            "min_confidence": 0.5,
            **params,
        },
    )


def test_bar_close_times():
    index = pd.date_range("2024-01-01", periods=3, freq="1h", tz="UTC")
    assert bar_close_times(index)[0] == pd.Timestamp("2024-01-01T01:00Z")
    assert bar_close_times(index, "4h")[0] == pd.Timestamp("2024-01-01T04:00Z")


def test_headlines_count_only_after_they_are_published(candles, forecaster_name, analyzer):
    k = 120
    close_k = candles.index[k] + pd.Timedelta(hours=1)  # bar k closes here
    background = pd.DataFrame(
        {
            "published_at": [candles.index[10], candles.index[60]],
            "title": ["Bitcoin miners sell reserves", "Crypto exchange reports record volumes"],
        }
    )
    burst = pd.DataFrame(
        {"published_at": [close_k] * 20, **{c: [v] * 20 for c, v in BULLISH.items()}}
    )
    rows = analyzer.analyze(background["title"].tolist())
    scored_background = background.drop(columns="title").assign(
        score=[r["score"] for r in rows], confidence=[r["confidence"] for r in rows]
    )
    base = _run(candles, forecaster_name, scored_background)
    with_burst = _run(candles, forecaster_name, pd.concat([scored_background, burst]))
    # published exactly at bar k's close: first seen by bar k + 1, filled at bar k + 2's open
    pd.testing.assert_frame_equal(
        base.equity_curve.iloc[: k + 2], with_burst.equity_curve.iloc[: k + 2]
    )
    assert with_burst.equity_curve["position"].iloc[k + 2] > 0
    # titles are scored with the given analyzer: same run as the pre-scored headlines
    titled = _run(candles, forecaster_name, background, analyzer=analyzer)
    pd.testing.assert_frame_equal(titled.equity_curve, base.equity_curve)


def test_no_headlines_trades_the_forecast_alone(candles, forecaster_name):
    result = _run(candles, forecaster_name, None, sentiment_weight=0.3, ml_weight=0.7)
    assert len(result.equity_curve) == len(candles)


def test_headlines_without_times_are_refused(candles, forecaster_name):
    with pytest.raises(ValueError, match="published_at"):
        _run(candles, forecaster_name, pd.DataFrame({"title": ["x"]}))
