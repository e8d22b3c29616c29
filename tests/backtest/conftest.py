"""Fixtures for the backtest tests: hand-built candles and an isolated MLflow store."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest


def make_candles(rows, start="2024-01-01", freq="1h") -> pd.DataFrame:
    """Candles from (open, high, low, close) tuples, volume 1, hourly UTC index."""
    arr = np.asarray(rows, dtype=np.float64)
    index = pd.date_range(start, periods=len(arr), freq=freq, tz="UTC", name="timestamp")
    return pd.DataFrame(
        {"open": arr[:, 0], "high": arr[:, 1], "low": arr[:, 2], "close": arr[:, 3], "volume": 1.0},
        index=index,
    )


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """Point MLflow at a throwaway SQLite store for the module, then restore.

    mlflow.set_experiment also exports MLFLOW_EXPERIMENT_ID, so that is restored as well (a
    stale id would point later tests, and `mlflow run`, at the wrong experiment).
    """
    import mlflow

    from training.tracking import setup_tracking

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")}
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{db}"
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    uri = setup_tracking()
    yield uri
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"] or "")
