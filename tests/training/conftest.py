"""Core test fixtures: real bundled candles (MLflow isolation is in tests/conftest.py)."""

from __future__ import annotations

import pytest

from training.data import load_data


@pytest.fixture(scope="session")
def btc():
    """90 days of the bundled real BTC/USDT hourly candles."""
    return load_data("BTC/USDT", data_path="sample", days_back=90)
