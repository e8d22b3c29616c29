"""Chronological train / validation / calibration / test splits of raw windows."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.data import align_symbols
from training.features import sliding_windows

SPLIT_NAMES = ("train", "val", "cal", "test")
DEFAULT_FRACTIONS = (0.7, 0.1, 0.1, 0.1)
MIN_WINDOWS_PER_SPLIT = 20


class NotEnoughDataError(ValueError):
    """Raised when the candles are too short for the sequence length and the splits."""


@dataclass
class Split:
    """Windows whose next bar (the target) falls inside one chronological split.

    Attributes:
        windows: raw candles [n, T, A, 5]; a window may start in an earlier split, its target
            never lies outside this one.
        next_close: the forecast asset's close of the bar after each window, [n].
        target_time: open time of that bar, [n].
    """

    windows: np.ndarray
    next_close: np.ndarray
    target_time: pd.DatetimeIndex

    def __len__(self) -> int:
        return len(self.next_close)


def bars_needed(sequence_length: int, fractions=DEFAULT_FRACTIONS) -> int:
    """Fewest bars that give every split at least MIN_WINDOWS_PER_SPLIT windows."""
    need_train = (sequence_length + MIN_WINDOWS_PER_SPLIT) / fractions[0]
    need_rest = MIN_WINDOWS_PER_SPLIT / min(fractions[1:])
    return math.ceil(max(need_train, need_rest)) + 1


def stack_frames(frames: dict[str, pd.DataFrame]) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """Align symbols on common timestamps and stack their candles into [N, A, 5]."""
    aligned = align_symbols(frames)
    index = next(iter(aligned.values())).index
    values = np.stack([df.to_numpy(dtype=np.float64) for df in aligned.values()], axis=1)
    return values, index


def make_splits(
    frames: dict[str, pd.DataFrame], sequence_length: int, fractions=DEFAULT_FRACTIONS
) -> dict[str, Split]:
    """Cut aligned candles into chronological splits of (window, next close) pairs.

    Args:
        frames: validated candles per symbol; the first symbol is the one forecast.
        sequence_length: bars per window.
        fractions: shares of bars for train, val, cal and test, in time order.

    Returns:
        A dict with keys train, val, cal, test.
    """
    if abs(sum(fractions) - 1.0) > 1e-9 or len(fractions) != len(SPLIT_NAMES):
        raise ValueError(f"fractions must be 4 shares summing to 1, got {fractions}")
    values, index = stack_frames(frames)
    n_bars = len(values)
    needed = bars_needed(sequence_length, fractions)
    if n_bars < needed:
        raise NotEnoughDataError(
            f"{n_bars} aligned bars is too few for sequence_length={sequence_length} and "
            f"{'/'.join(str(round(f * 100)) for f in fractions)} splits: need at least {needed} "
            "bars (load more days or shorten the sequence)"
        )
    windows = sliding_windows(values, sequence_length)[:-1]  # the last window has no next bar
    target_bar = np.arange(sequence_length, n_bars)
    bounds = np.floor(np.cumsum((0.0, *fractions)) * n_bars).astype(int)
    bounds[-1] = n_bars
    splits = {}
    for name, lo, hi in zip(SPLIT_NAMES, bounds[:-1], bounds[1:], strict=True):
        keep = (target_bar >= lo) & (target_bar < hi)
        splits[name] = Split(
            windows=windows[keep],
            next_close=values[target_bar[keep], 0, 3],
            target_time=index[target_bar[keep]],
        )
    return splits
