"""The sentiment aggregate (sentiment.aggregate) on hand-computed cases, and no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sentiment.aggregate import (
    AggregateSettings,
    aggregate_scores,
    in_window,
    sentiment_series,
    summarize,
)
from sentiment.news import Headline

SETTINGS = AggregateSettings(half_life_hours=24, max_age_hours=72, evidence_k=2)
T0 = pd.Timestamp("2024-01-02T00:00Z")


def test_probability_and_recency_weighting():
    # recency r = [1, 0.5] (ages 0 h and one half-life); weights w = r * c = [0.9, 0.4]
    score, confidence, n = aggregate_scores([0.8, -0.4], [0.9, 0.8], [0.0, 24.0], SETTINGS)
    assert score == pytest.approx((0.9 * 0.8 + 0.4 * -0.4) / 1.3)  # 0.4308
    assert confidence == pytest.approx(1.3 / (1.5 + 2))  # sum w / (sum r + k) = 0.3714
    assert n == 2


def test_one_fresh_headline_counts_one_third_at_k_2():
    score, confidence, n = aggregate_scores([-0.6], [0.75], [0.0], SETTINGS)
    assert score == pytest.approx(-0.6) and confidence == pytest.approx(0.75 / 3) and n == 1


def test_no_headlines_is_neutral_with_zero_confidence():
    assert aggregate_scores([], [], [], SETTINGS) == (0.0, 0.0, 0)
    out = summarize([], np.array([]), SETTINGS, "request", T0, n_offered=0)
    assert out["score"] == 0.0 and out["confidence"] == 0.0 and out["n_headlines"] == 0
    assert out["note"] == "no headlines" and out["source"] == "request"


def test_window_drops_future_and_stale_headlines():
    headlines = [
        Headline("an hour ago", T0 - pd.Timedelta(hours=1)),
        Headline("from the future", T0 + pd.Timedelta(hours=1)),
        Headline("too old", T0 - pd.Timedelta(hours=80)),
        Headline("undated"),
    ]
    kept, ages = in_window(headlines, T0, SETTINGS)
    assert [h.title for h in kept] == ["an hour ago", "undated"]
    assert ages.tolist() == [1.0, 0.0]
    stale = summarize([], np.array([]), SETTINGS, "file:x.csv", T0, n_offered=3)
    assert "3 outside that window" in stale["note"] and stale["confidence"] == 0.0


def test_series_uses_only_headlines_published_before_each_close():
    close = pd.date_range("2024-01-01T10:00", periods=3, freq="1h", tz="UTC")
    published = pd.DatetimeIndex(["2024-01-01T10:00Z", "2024-01-01T11:30Z"])
    scores, confidences = np.array([0.5, -1.0]), np.array([0.8, 1.0])
    series = sentiment_series(close, published, scores, confidences, SETTINGS)
    # published exactly at 10:00 is not before the 10:00 close
    assert series["n_headlines"].tolist() == [0, 1, 2]
    assert series.iloc[0]["score"] == 0.0 and series.iloc[0]["confidence"] == 0.0
    expected = aggregate_scores(scores, confidences, [2.0, 0.5], SETTINGS)
    assert tuple(series.iloc[2]) == pytest.approx(expected)
    # a later headline changes nothing at or before its publication
    later = published.append(pd.DatetimeIndex(["2024-01-01T11:00Z"]))
    series2 = sentiment_series(
        close, later, np.append(scores, 1.0), np.append(confidences, 1.0), SETTINGS
    )
    pd.testing.assert_frame_equal(series.iloc[:2], series2.iloc[:2])
    assert series2.iloc[2]["n_headlines"] == 3


@pytest.mark.parametrize(
    "kwargs", [{"half_life_hours": 0}, {"max_age_hours": -1}, {"evidence_k": -0.5}]
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        AggregateSettings(**kwargs)
