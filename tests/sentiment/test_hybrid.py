"""The hybrid rule (sentiment.hybrid) on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from sentiment.hybrid import HybridWeights, combine_signal, ml_score


def test_ml_score_is_return_over_interval_half_width():
    # last close 101 / 1.01 = 100; half-width (103 - 99) / 2 / 100 = 0.02; 0.01 / 0.02 = 0.5
    assert ml_score(0.01, 99.0, 103.0, 101.0) == pytest.approx(0.5)
    # a wider interval (95..107: half-width 0.06) shrinks the same forecast to 1/6
    assert ml_score(0.01, 95.0, 107.0, 101.0) == pytest.approx(1 / 6)
    # the whole interval above the last close: clipped to 1; below: -1
    assert ml_score(0.01, 100.5, 101.5, 101.0) == 1.0
    assert ml_score(-0.02, 96.0, 100.0, 98.0) == -1.0


def test_weak_forecast_with_half_sure_positive_news_holds():
    out = combine_signal(0.01, 99.0, 103.0, 101.0, sentiment_score=0.8, sentiment_confidence=0.5)
    # w_s' = 0.3 * 0.5 = 0.15; combined = (0.7 * 0.5 + 0.15 * 0.8) / 0.85 = 0.47 / 0.85
    assert out["combined_score"] == pytest.approx(0.47 / 0.85)
    assert out["confidence"] == pytest.approx(0.47 / 0.85)
    assert out["weights"] == pytest.approx({"ml": 0.7 / 0.85, "sentiment": 0.15 / 0.85})
    assert out["signal"] == "HOLD"  # 0.553 < min_confidence 0.6
    assert out["ml_score"] == pytest.approx(0.5)
    assert out["price_prediction"] == 101.0 and out["predicted_return"] == 0.01
    assert out["configured_weights"] == {
        "sentiment_weight": 0.3,
        "ml_weight": 0.7,
        "min_confidence": 0.6,
    }


def test_confident_forecast_against_sure_negative_news():
    args = (0.01, 100.5, 101.5, 101.0)  # ml_score 1
    out = combine_signal(*args, sentiment_score=-0.5, sentiment_confidence=1.0)
    assert out["combined_score"] == pytest.approx(0.7 * 1.0 + 0.3 * -0.5)  # 0.55
    assert out["signal"] == "HOLD"
    looser = combine_signal(*args, -0.5, 1.0, HybridWeights(min_confidence=0.5))
    assert looser["signal"] == "BUY" and looser["confidence"] == pytest.approx(0.55)


def test_agreeing_bearish_sources_sell_with_full_confidence():
    out = combine_signal(-0.02, 96.0, 100.0, 98.0, sentiment_score=-1.0, sentiment_confidence=1.0)
    assert out["signal"] == "SELL" and out["confidence"] == pytest.approx(1.0)


def test_no_news_leaves_the_forecast_alone():
    out = combine_signal(0.012, 100.2, 102.2, 101.2, sentiment_score=0.0, sentiment_confidence=0.0)
    assert out["weights"] == {"ml": 1.0, "sentiment": 0.0}
    assert out["ml_score"] == 1.0 and out["signal"] == "BUY"
    uncertain = combine_signal(0.01, 95.0, 107.0, 101.0, 0.0, 0.0)
    assert uncertain["signal"] == "HOLD" and uncertain["confidence"] == pytest.approx(1 / 6)


def test_sure_news_can_flip_a_weak_forecast():
    # ml_score 0.2: r 0.002, last close 100, half-width 0.01
    out = combine_signal(0.002, 99.2, 101.2, 100.2, -1.0, 1.0, HybridWeights(min_confidence=0.1))
    assert out["ml_score"] == pytest.approx(0.2)
    assert out["combined_score"] == pytest.approx(0.7 * 0.2 - 0.3)  # -0.16
    assert out["signal"] == "SELL"


def test_zero_combined_is_hold_even_without_a_threshold():
    out = combine_signal(0.0, 99.0, 101.0, 100.0, 0.0, 0.0, HybridWeights(min_confidence=0.0))
    assert out["signal"] == "HOLD"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.01, 99.0, 103.0, 101.0, 1.5, 0.5), "sentiment_score"),
        ((0.01, 99.0, 103.0, 101.0, 0.5, -0.1), "sentiment_confidence"),
        ((0.01, 103.0, 99.0, 101.0, 0.5, 0.5), "upper"),
        ((math.nan, 99.0, 103.0, 101.0, 0.5, 0.5), "predicted_return"),
        ((0.01, 99.0, 103.0, -1.0, 0.5, 0.5), "last close"),
    ],
)
def test_bad_inputs_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        combine_signal(*args)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sentiment_weight": -0.1}, "sentiment_weight"),
        ({"ml_weight": math.inf}, "ml_weight"),
        ({"sentiment_weight": 0.0, "ml_weight": 0.0}, "> 0"),
        ({"min_confidence": 1.2}, "min_confidence"),
    ],
)
def test_bad_weights_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HybridWeights(**kwargs)
