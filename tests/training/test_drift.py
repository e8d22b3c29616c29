"""Drift scores: quiet on data like the training period, loud when volatility changes."""

from __future__ import annotations

import numpy as np
import pytest

from training import drift
from training.dataset import make_splits
from training.features import FeaturePipeline


@pytest.fixture(scope="module")
def setup(btc):
    splits = make_splits({"BTC/USDT": btc}, 60)
    pipe = FeaturePipeline(60).fit(splits["train"].windows)
    feats = {n: pipe.raw_features(pipe.check_windows(s.windows)) for n, s in splits.items()}
    reference = drift.calibrate_threshold(drift.fit_reference(feats["train"]), feats["val"])
    return pipe, splits, feats, reference


def test_threshold_flags_about_one_percent_of_validation_windows(setup):
    pipe, _, feats, reference = setup
    scores = drift.window_psi(feats["val"], reference).mean(axis=1)
    assert 0.005 <= (scores > reference["threshold"]).mean() <= 0.02
    result = drift.psi(feats["val"][:5], reference, pipe.feature_names)
    assert set(result) == {"score", "threshold", "drifted", "per_feature"}
    assert list(result["per_feature"]) == list(pipe.feature_names)


def test_a_volatility_jump_is_flagged(setup):
    pipe, splits, _, reference = setup
    windows = pipe.check_windows(splits["test"].windows[:8]).copy()
    anchor = windows[:, :1, :, 3:4]
    windows[..., :4] = anchor * np.exp(4 * np.log(windows[..., :4] / anchor))  # 4x the moves
    result = drift.psi(pipe.raw_features(windows), reference, pipe.feature_names)
    assert result["drifted"] and result["score"] > 1.5 * reference["threshold"]
