"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def isolated_tracking(directory: Path, **env: str) -> Iterator[str]:
    """Point MLflow at a throwaway SQLite store in `directory` (plus extra env vars), then
    restore. mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID, so that is restored too: a
    stale id would point later tests, and `mlflow run`, at the wrong experiment."""
    import mlflow

    from training.tracking import setup_tracking

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", *env)
    saved = {k: os.environ.get(k) for k in keys}
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{directory / 'mlflow.db'}"
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    os.environ.update(env)
    try:
        yield setup_tracking()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"] or "")


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> Iterator[str]:
    """An isolated MLflow store for one test module."""
    with isolated_tracking(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri
