"""Checks on OHLCV candles: every problem is an error naming the row, never a silent fix."""

from __future__ import annotations

import numpy as np
import pandas as pd

OHLCV_COLUMNS = ("open", "high", "low", "close", "volume")


class DataValidationError(ValueError):
    """Raised when candles break an OHLCV invariant; the message names the rows."""


def _rows(df: pd.DataFrame, mask: np.ndarray, limit: int = 3) -> str:
    stamps = [str(ts) for ts in df.index[mask][:limit]]
    more = int(mask.sum()) - len(stamps)
    return ", ".join(stamps) + (f" (+{more} more)" if more > 0 else "")


def validate_ohlcv(df: pd.DataFrame, source: str = "data") -> pd.DataFrame:
    """Validate candles and return them unchanged (columns cast to float).

    Args:
        df: candles with a DatetimeIndex and columns open, high, low, close, volume.
        source: where the candles came from, used in error messages.

    Returns:
        The same candles with float64 columns in OHLCV order.

    Raises:
        DataValidationError: on missing columns, a non-datetime index, duplicate or unordered
            timestamps, NaN/inf, non-positive prices, high below max(open, close), low above
            min(open, close) or negative volume. The message names the first offending rows.
    """
    missing = [c for c in OHLCV_COLUMNS if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"{source}: missing columns {missing}; need {list(OHLCV_COLUMNS)}, "
            f"got {list(df.columns)}"
        )
    if not isinstance(df.index, pd.DatetimeIndex):
        raise DataValidationError(f"{source}: index must be a DatetimeIndex of candle open times")
    if len(df) == 0:
        raise DataValidationError(f"{source}: no candles")
    try:
        out = df.loc[:, list(OHLCV_COLUMNS)].astype("float64")
    except (TypeError, ValueError) as exc:
        raise DataValidationError(f"{source}: non-numeric OHLCV values ({exc})") from exc

    dup = out.index.duplicated(keep=False)
    if dup.any():
        raise DataValidationError(f"{source}: duplicate timestamps at {_rows(out, dup)}")
    stamps = out.index.asi8
    unordered = np.r_[False, np.diff(stamps) < 0]
    if unordered.any():
        raise DataValidationError(
            f"{source}: timestamps out of order at {_rows(out, unordered)}; sort them first"
        )
    values = out.to_numpy()
    bad = ~np.isfinite(values)
    if bad.any():
        rows = bad.any(axis=1)
        cols = [c for c, b in zip(OHLCV_COLUMNS, bad.any(axis=0), strict=True) if b]
        raise DataValidationError(f"{source}: NaN or inf in {cols} at {_rows(out, rows)}")
    o, h, lo, c, v = values.T
    checks = [
        ((values[:, :4] <= 0).any(axis=1), "non-positive price"),
        (h < np.maximum(o, c), "high below max(open, close)"),
        (lo > np.minimum(o, c), "low above min(open, close)"),
        (v < 0, "negative volume"),
    ]
    for mask, problem in checks:
        if mask.any():
            raise DataValidationError(f"{source}: {problem} at {_rows(out, mask)}")
    return out


def find_gaps(df: pd.DataFrame, interval: str) -> pd.DataFrame:
    """List missing stretches between consecutive candles.

    Args:
        df: validated candles.
        interval: the bar interval, e.g. "1h".

    Returns:
        A DataFrame with columns after (last candle before the gap) and missing_bars.
    """
    step = pd.Timedelta(interval_to_offset(interval))
    diffs = df.index.to_series().diff()
    gaps = diffs[diffs > step]
    return pd.DataFrame(
        {"after": gaps.index - gaps.values, "missing_bars": (gaps / step - 1).astype(int)}
    ).reset_index(drop=True)


def interval_to_offset(interval: str) -> str:
    """Translate an exchange interval ("1m", "1h", "1d", "1w") into a pandas offset string."""
    units = {"m": "min", "h": "h", "d": "D", "w": "W"}
    number, unit = interval[:-1], interval[-1]
    if not number.isdigit() or unit not in units:
        raise ValueError(f"unknown interval {interval!r}; use e.g. 15m, 1h, 4h, 1d")
    return f"{number}{units[unit]}"


def bars_per_year(interval: str) -> float:
    """How many bars of this interval fit in a year of round-the-clock (crypto) trading."""
    return pd.Timedelta(days=365) / pd.Timedelta(interval_to_offset(interval))
