"""Shared fixtures for the core tests: real bundled candles and an isolated MLflow store."""

from __future__ import annotations

import os

import pytest

from training.data import load_data


@pytest.fixture(scope="session")
def btc():
    """90 days of the bundled real BTC/USDT hourly candles."""
    return load_data("BTC/USDT", data_path="sample", days_back=90)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """Point MLflow at a throwaway SQLite store for the module, then restore."""
    import mlflow

    from training.tracking import setup_tracking

    # mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID too: restore both.
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
