"""The feature pipeline: no look-ahead, fit on training data only, clear errors on bad windows."""

from __future__ import annotations

import numpy as np
import pytest

from training.dataset import make_splits
from training.features import BAR_FEATURES, FeaturePipeline, WindowShapeError, sliding_windows
from training.fit import fit_forecaster


def test_later_bars_do_not_change_earlier_windows(btc):
    values = btc.to_numpy()
    pipe = FeaturePipeline(32).fit(sliding_windows(values[:500], 32))
    short = sliding_windows(values[:800], 32)
    long = sliding_windows(values, 32)
    np.testing.assert_array_equal(pipe.transform(short), pipe.transform(long[: len(short)]))
    np.testing.assert_array_equal(
        pipe.volatility(pipe.check_windows(short)),
        pipe.volatility(pipe.check_windows(long[: len(short)])),
    )


def test_a_window_ignores_the_future_even_when_it_is_wild(btc):
    values = btc.to_numpy()[:200].copy()
    pipe = FeaturePipeline(32).fit(sliding_windows(values, 32))
    before = pipe.transform(values[100 - 32 : 100][None])
    values[100:] *= 3.0  # a crash/pump after bar 99 must not leak into the window ending there
    after = pipe.transform(values[100 - 32 : 100][None])
    np.testing.assert_array_equal(before, after)


def test_predictions_of_earlier_windows_do_not_change(btc):
    result = fit_forecaster(
        {"BTC/USDT": btc},
        "lstm",
        {"epochs": 1, "sequence_length": 24, "hidden_size": 8},
        show_progress=False,
    )
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
