"""Population stability index of live feature values against the training reference."""

from __future__ import annotations

import numpy as np

PSI_BINS = 10
# Common reading of PSI: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 significant shift.
PSI_THRESHOLD = 0.25
_EPS = 1e-4


def fit_reference(features: np.ndarray) -> dict:
    """Decile edges and bin shares of each feature over the training windows.

    Args:
        features: unnormalised training features [n, T, F].
    """
    flat = features.reshape(-1, features.shape[-1])
    qs = np.linspace(0, 1, PSI_BINS + 1)[1:-1]
    edges = np.quantile(flat, qs, axis=0).T  # [F, bins-1]
    shares = np.stack([_shares(flat[:, f], edges[f]) for f in range(flat.shape[1])])
    return {"edges": edges.tolist(), "shares": shares.tolist()}


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def psi(features: np.ndarray, reference: dict, names: tuple[str, ...]) -> dict:
    """PSI per feature of live features [n, T, F] against the reference, and their mean.

    Returns:
        {"score": mean PSI, "threshold": PSI_THRESHOLD, "drifted": score > threshold,
        "per_feature": {name: PSI}}.
    """
    flat = features.reshape(-1, features.shape[-1])
    edges = np.asarray(reference["edges"])
    ref = np.asarray(reference["shares"]) + _EPS
    per = {}
    for f, name in enumerate(names):
        live = _shares(flat[:, f], edges[f]) + _EPS
        per[name] = float(np.sum((live - ref[f]) * np.log(live / ref[f])))
    score = float(np.mean(list(per.values())))
    return {
        "score": score,
        "threshold": PSI_THRESHOLD,
        "drifted": score > PSI_THRESHOLD,
        "per_feature": per,
    }
