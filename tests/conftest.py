"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from training.cluster import RAY_ENV_DEFAULTS

# Every Ray instance the tests start or join is on loopback and runs without token auth. Set once
# for the whole process: Ray caches the mode at its first init, so a process that joined a
# `RAY_AUTH_MODE=disabled` cluster and later started a local instance (token auth by default,
# Ray 2.60) failed with InvalidAuthToken.
os.environ["RAY_AUTH_MODE"] = "disabled"
# No idle workers started ahead at each Ray start: Serve tests never use them, and on two cores
# every process's imports cost the tests that run beside them.
os.environ["RAY_prestart_worker_first_driver"] = "0"
# Serve's proxy gets as long to start as the product gives it (a CI run lost a whole module when
# the controller killed a proxy still importing after Ray's default 5 s).
os.environ.update(RAY_ENV_DEFAULTS)

# The slowest modules first (measured, fresh-clone runs of 2026-12-02): with `-n 2 --dist
# loadfile` each worker takes files in this order, so the long ones overlap and short ones fill
# the end.
# tests/cluster comes first on purpose: a driver process that has run a local Ray instance
# before cannot own objects that another node of a later cluster pulls (OwnerDiedError).
SLOWEST_FIRST = (
    "tests/cluster/",
    "tests/training/test_mlproject.py",
    "tests/training/test_distributed.py",
    "tests/deployments/test_user_config.py",
    "tests/deployments/test_faults.py",
    "tests/deployments/test_serving.py",
    "tests/training/test_tune.py",
    "tests/deployments/test_hostile_input.py",
    "tests/sentiment/test_api.py",
    "tests/backtest/test_walk_forward.py",
    "tests/backtest/test_ml_strategy.py",
)


def pytest_xdist_make_scheduler(config, log):
    """xdist's loadfile, except that tests/cluster is one unit: its files share one
    package-scoped two-node cluster, which two workers would each start."""
    from xdist.scheduler import LoadFileScheduling

    config.option.loadscopereorder = False  # keep SLOWEST_FIRST, not "most tests first"

    class ClusterAsOneFile(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return "tests/cluster/" if scope.startswith("tests/cluster/") else scope

    return ClusterAsOneFile(config, log)


def pytest_collection_modifyitems(config, items) -> None:
    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return next(
            (i for i, p in enumerate(SLOWEST_FIRST) if path.startswith(p)), len(SLOWEST_FIRST)
        )

    items.sort(key=rank)  # stable: file order and test order within a file are kept


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
