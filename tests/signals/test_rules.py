"""The forecast-confidence rule and the hybrid rule (signals) on hand-computed cases."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from signals import (
    HybridWeights,
    combine_signal,
    directional_confidence,
    forecast_score,
    hybrid_series,
    ml_score,
)


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


def test_directional_confidence_is_the_share_of_the_interval_agreeing():
    # +0.2% with interval [-1%, +1.4%]: 1.4 / 2.4 of it above zero
    assert directional_confidence(0.002, -0.01, 0.014) == pytest.approx(1.4 / 2.4)
    assert directional_confidence(-0.002, -0.014, 0.01) == pytest.approx(1.4 / 2.4)
    assert directional_confidence(0.0, -0.01, 0.01) == pytest.approx(0.5)
    assert directional_confidence(0.01, 0.005, 0.015) == 1.0
    assert directional_confidence(0.01, 0.01, 0.01) == 1.0  # zero width: fully sure


def test_the_score_is_the_signed_confidence_and_clipped_r_over_h_when_symmetric():
    rng = np.random.default_rng(0)
    r = rng.normal(0, 0.01, 200)
    h = rng.uniform(0.001, 0.03, 200)
    score = forecast_score(r, r - h, r + h)
    np.testing.assert_allclose(score, np.clip(r / h, -1, 1), atol=1e-12)
    confidence = directional_confidence(r, r - h, r + h)
    np.testing.assert_allclose(np.abs(score), 2 * confidence - 1, atol=1e-12)
    assert np.isnan(forecast_score(np.nan, -0.01, 0.01))


def test_the_series_rule_is_combine_signal_bar_by_bar():
    rng = np.random.default_rng(1)
    r = rng.normal(0, 0.01, 50)
    lo, hi = r - 0.01, r + 0.012
    r[:3] = np.nan  # bars without a forecast
    s, c = rng.uniform(-1, 1, 50), rng.uniform(0, 1, 50)
    weights = HybridWeights(min_confidence=0.3)
    out = hybrid_series(r, lo, hi, s, c, weights)
    assert list(out["signal"][:3]) == ["HOLD"] * 3 and list(out["confidence"][:3]) == [0.0] * 3
    for i in range(3, 50):
        one = combine_signal(r[i], 1 + lo[i], 1 + hi[i], 1 + r[i], s[i], c[i], weights)
        assert out["signal"][i] == one["signal"]
        assert out["combined_score"][i] == pytest.approx(one["combined_score"])
        assert out["ml_score"][i] == pytest.approx(one["ml_score"])


def test_signals_is_lightweight():
    code = (
        "import sys, signals; "
        "print(sorted(m for m in ('backtrader', 'torch', 'mlflow', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # Serve replicas import it: NumPy only


def test_infinite_interval_width_neither_divides_by_zero_nor_gives_nan():
    """Issue 12, finding 1: an interval of +-1e308 (or inf) means the model knows nothing."""
    huge = [[-1e308, 1e308], [-np.inf, np.inf], [0.0, 0.0]]
    lo, hi = np.array(huge).T
    share = directional_confidence([0.1, 0.1, 0.1], lo, hi)
    assert share.tolist() == [0.5, 0.5, 1.0]
    assert np.isfinite(ml_score(0.01, 1e-310, 1e308, 1e-300))
