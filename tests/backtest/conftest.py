"""Fixtures for the backtest tests: hand-built candles (MLflow isolation: tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def make_candles(rows, start="2024-01-01", freq="1h") -> pd.DataFrame:
    """Candles from (open, high, low, close) tuples, volume 1, hourly UTC index."""
    arr = np.asarray(rows, dtype=np.float64)
    index = pd.date_range(start, periods=len(arr), freq=freq, tz="UTC", name="timestamp")
    return pd.DataFrame(
        {"open": arr[:, 0], "high": arr[:, 1], "low": arr[:, 2], "close": arr[:, 3], "volume": 1.0},
        index=index,
    )
