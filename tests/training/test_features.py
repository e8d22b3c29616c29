"""The feature pipeline: no look-ahead, fit on training data only, clear errors on bad windows."""

from __future__ import annotations

import numpy as np
import pytest

from training.dataset import make_splits
from training.features import (
    BAR_FEATURES,
    FEATURE_SETS,
    OHLCV_FEATURES,
    FeaturePipeline,
    WindowShapeError,
    feature_set_for,
    sliding_windows,
)
from training.fit import fit_forecaster
from training.models.lstm import LSTMModelConfig


@pytest.mark.parametrize("feature_set", sorted(FEATURE_SETS))
def test_later_bars_do_not_change_earlier_windows(btc, feature_set):
    values = btc.to_numpy()
    pipe = FeaturePipeline(32, feature_set=feature_set).fit(sliding_windows(values[:500], 32))
    short = sliding_windows(values[:800], 32)
    long = sliding_windows(values, 32)
    np.testing.assert_array_equal(pipe.transform(short), pipe.transform(long[: len(short)]))
    np.testing.assert_array_equal(
        pipe.volatility(pipe.check_windows(short)),
        pipe.volatility(pipe.check_windows(long[: len(short)])),
    )


@pytest.mark.parametrize("feature_set", sorted(FEATURE_SETS))
def test_a_window_ignores_the_future_even_when_it_is_wild(btc, feature_set):
    values = btc.to_numpy()[:200].copy()
    pipe = FeaturePipeline(32, feature_set=feature_set).fit(sliding_windows(values, 32))
    before = pipe.transform(values[100 - 32 : 100][None])
    values[100:] *= 3.0  # a crash/pump after bar 99 must not leak into the window ending there
    after = pipe.transform(values[100 - 32 : 100][None])
    np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("input_features", [7, 5])
def test_predictions_of_earlier_windows_do_not_change(btc, input_features):
    result = fit_forecaster(
        {"BTC/USDT": btc},
        LSTMModelConfig(
            epochs=1, sequence_length=24, hidden_units=8, input_features=input_features
        ),
        show_progress=False,
    )
    assert result.forecaster.pipeline.num_features == input_features
    values = btc.to_numpy()
    early = sliding_windows(values[:600], 24)
    full = sliding_windows(values, 24)[: len(early)]
    a = result.forecaster.predict(early)
    b = result.forecaster.predict(full)
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-6)


def test_normalisation_is_fit_on_the_training_split_only(btc):
    splits = make_splits({"BTC/USDT": btc}, 24)
    pipe = FeaturePipeline(24).fit(splits["train"].windows)
    poisoned = btc.copy()
    test_start = splits["test"].target_time[0]
    poisoned.loc[poisoned.index >= test_start, ["open", "high", "low", "close"]] *= 10
    poisoned.loc[poisoned.index >= test_start, "volume"] *= 100
    pipe2 = FeaturePipeline(24).fit(make_splits({"BTC/USDT": poisoned}, 24)["train"].windows)
    np.testing.assert_array_equal(pipe.mean, pipe2.mean)
    np.testing.assert_array_equal(pipe.std, pipe2.std)
    assert splits["train"].target_time[-1] < splits["val"].target_time[0]
    assert splits["val"].target_time[-1] < splits["cal"].target_time[0]
    assert splits["cal"].target_time[-1] < splits["test"].target_time[0]


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        (np.ones((2, 31, 5)), r"shape \[n, 32, 5\].*got \[2, 31, 5\]"),
        (np.ones((2, 32, 4)), r"got \[2, 32, 4\]"),
        ([[["a"] * 5] * 32], "numeric"),
        ([[[1, 1, 1, 1, 1]] * 31 + [[1, 1, 1, 0, 1]]], "non-positive price at window 0, bar 31"),
        (
            [[[1, 1, 1, 1, 1]] * 5 + [[1, 1, 2, 1, 1]] + [[1, 1, 1, 1, 1]] * 26],
            "high below low at window 0, bar 5",
        ),
        ([[[1, 1, 1, 1, float("nan")]] * 32], "NaN or inf value at window 0, bar 0"),
        ([[[1, 1, 1, 1, -1]] * 32], "negative volume"),
        (np.ones((0, 32, 5)), "no windows"),
    ],
)
def test_bad_windows_are_named(windows, message):
    pipe = FeaturePipeline(32)
    with pytest.raises(WindowShapeError, match=message):
        pipe.check_windows(windows)


def test_multi_asset_feature_names_and_shapes(btc):
    pipe = FeaturePipeline(16, ("BTC/USDT", "ETH/USDT"))
    assert pipe.feature_names[: len(BAR_FEATURES)] == tuple(f"BTC/USDT:{f}" for f in BAR_FEATURES)
    with pytest.raises(WindowShapeError, match=r"\[n, 16, 2, 5\]"):
        pipe.check_windows(np.ones((1, 16, 5)))


def test_bundle_with_other_feature_names_is_refused():
    state = FeaturePipeline(8).fit(np.ones((3, 8, 5)) + np.arange(8)[None, :, None]).to_dict()
    state["feature_names"] = list(reversed(state["feature_names"]))
    with pytest.raises(ValueError, match="do not match"):
        FeaturePipeline.from_dict(state)


def test_each_feature_of_a_window_depends_on_its_own_bars_only(btc):
    """Perturbing any bar outside a window leaves every feature of that window unchanged, and
    the ohlcv features are the prices relative to the window's last close."""
    values = btc.to_numpy()[:100].copy()
    for feature_set in FEATURE_SETS:
        pipe = FeaturePipeline(16, feature_set=feature_set)
        window = values[40:56]
        before = pipe.raw_features(pipe.check_windows(window[None]))
        noisy = values.copy()
        noisy[:40] *= 1.7
        noisy[56:] *= 0.3
        after = pipe.raw_features(pipe.check_windows(noisy[40:56][None]))
        np.testing.assert_array_equal(before, after)
    pipe = FeaturePipeline(16, feature_set="ohlcv")
    feats = pipe.raw_features(pipe.check_windows(window[None]))[0]  # [15, 5]
    np.testing.assert_allclose(feats[:, :4], np.log(window[1:, :4] / window[-1, 3]))
    assert pipe.feature_names == OHLCV_FEATURES and feats[-1, 3] == 0.0


def test_the_feature_set_follows_input_features_and_is_saved():
    assert feature_set_for(7) == "candle" and feature_set_for(5) == "ohlcv"
    with pytest.raises(ValueError, match=r"input_features=6 matches no feature set.*7.*5"):
        feature_set_for(6)
    state = FeaturePipeline(8, feature_set="ohlcv").fit(np.ones((3, 8, 5)) + 1).to_dict()
    assert FeaturePipeline.from_dict(state).feature_set == "ohlcv"
    old = FeaturePipeline(8).fit(np.ones((3, 8, 5)) + 1).to_dict()
    del old["feature_set"]  # bundles saved before feature sets existed
    assert FeaturePipeline.from_dict(old).feature_names == BAR_FEATURES
    with pytest.raises(ValueError, match="unknown feature set 'ticks'"):
        FeaturePipeline(8, feature_set="ticks")
