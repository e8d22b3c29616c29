"""Core test fixtures: real bundled candles (MLflow isolation is in tests/conftest.py)."""

from __future__ import annotations

import logging

import pytest

from training.data import load_data


@pytest.fixture(scope="session")
def btc():
    """90 days of the bundled real BTC/USDT hourly candles."""
    return load_data("BTC/USDT", data_path="sample", days_back=90)


@pytest.fixture(scope="module")
def ray_cluster():
    """A local 2-CPU Ray for one module; "local" so a `ray start` cluster of another test or
    of the user's is never joined by accident."""
    import ray

    started = not ray.is_initialized()  # share a session's Ray if a fixture left one up
    if started:
        ray.init(
            address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING
        )
    yield
    if started:
        ray.shutdown()
