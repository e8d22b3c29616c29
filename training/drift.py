"""Population stability index (PSI) of live feature values against the training reference.

Scored per window: each window's 59 bars per feature are binned on the training deciles and
compared with the training shares. Short stretches of hourly data differ from a year-long
distribution even without drift (volatility clusters), so the alarm threshold is not a textbook
constant: it is the 99th percentile of single-window scores on the validation split, the period
right after training, stored in the reference at fit time.
"""

from __future__ import annotations

import numpy as np

PSI_BINS = 10
DEFAULT_THRESHOLD = 0.25  # the common "significant shift" reading, for bundles without one
_PSEUDO_COUNT = 0.5  # per bin: an empty bin in a 59-value sample must not dominate
PSI_CHUNK = 1024  # windows scored per pass


def fit_reference(features: np.ndarray) -> dict:
    """Decile edges and bin shares of each feature over the training windows.

    Args:
        features: unnormalised training features [n, T, F].
    """
    flat = features.reshape(-1, features.shape[-1])
    qs = np.linspace(0, 1, PSI_BINS + 1)[1:-1]
    edges = np.quantile(flat, qs, axis=0).T  # [F, bins-1]
    shares = []
    for f in range(flat.shape[1]):
        bins = np.searchsorted(edges[f], flat[:, f], side="right")
        shares.append(np.bincount(bins, minlength=PSI_BINS) / len(flat))
    return {"edges": edges.tolist(), "shares": np.stack(shares).tolist()}


def window_psi(features: np.ndarray, reference: dict) -> np.ndarray:
    """PSI of each window and feature, [n, F], less the PSI that sampling noise alone gives
    (about (bins - 1) / T), floored at 0."""
    n, steps, n_feat = features.shape
    edges = np.asarray(reference["edges"])  # [F, bins-1]
    ref = np.clip(np.asarray(reference["shares"]), 1e-6, None)  # [F, bins]
    out = np.empty((n, n_feat))
    # every feature in one pass (the serving hot path scores one window per request); chunks
    # bound the [windows, T, F, bins-1] comparison on long backtests
    for i in range(0, n, PSI_CHUNK):
        part = features[i : i + PSI_CHUNK]
        m = len(part)
        # searchsorted(side="right") per feature: how many of its edges are <= the value
        bins = (edges <= part[..., None]).sum(axis=-1)
        bins[np.isnan(part)] = PSI_BINS - 1  # where searchsorted puts NaN
        bins += PSI_BINS * np.arange(m * n_feat).reshape(m, 1, n_feat)
        counts = np.bincount(bins.ravel(), minlength=m * n_feat * PSI_BINS)
        live = (counts.reshape(m, n_feat, PSI_BINS) + _PSEUDO_COUNT) / (
            steps + _PSEUDO_COUNT * PSI_BINS
        )
        out[i : i + m] = np.sum((live - ref) * np.log(live / ref), axis=-1)
    return np.maximum(out - (PSI_BINS - 1) / steps, 0.0)


def calibrate_threshold(reference: dict, val_features: np.ndarray, quantile: float = 0.99) -> dict:
    """Store the alarm threshold: the `quantile` of validation windows' scores."""
    scores = window_psi(val_features, reference).mean(axis=1)
    return {**reference, "threshold": float(np.quantile(scores, quantile))}


def psi(features: np.ndarray, reference: dict, names: tuple[str, ...]) -> dict:
    """Drift of live features [n, T, F] against the reference.

    Returns:
        {"score": mean over windows and features of PSI, "threshold": the calibrated alarm level,
        "drifted": score > threshold, "per_feature": {name: mean PSI over windows}}.
    """
    return summarise(window_psi(features, reference), threshold(reference), names)


def threshold(reference: dict) -> float:
    """The reference's calibrated alarm level (DEFAULT_THRESHOLD for bundles without one)."""
    return float(reference["threshold"]) if "threshold" in reference else DEFAULT_THRESHOLD


def summarise(per_window: np.ndarray, alarm: float, names: tuple[str, ...]) -> dict:
    """The drift report of `psi` from per-window scores [n, F] already computed."""
    score = float(per_window.mean())
    return {
        "score": score,
        "threshold": alarm,
        "drifted": score > alarm,
        "per_feature": {
            name: float(v) for name, v in zip(names, per_window.mean(axis=0), strict=True)
        },
    }
