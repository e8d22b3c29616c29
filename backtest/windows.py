"""Walk-forward window geometry: rolling training periods, each followed by its test period."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


class WalkForwardError(ValueError):
    """Raised when the data or settings cannot make even one walk-forward window."""


@dataclass(frozen=True)
class WalkForwardWindow:
    """One window's periods; ends are exclusive and test_start == train_end, so no bar is in
    both the training and the test period."""

    index: int
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp

    def slices(self, candles: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(training candles, test candles) of this window."""
        when = candles.index
        train = candles[(when >= self.train_start) & (when < self.train_end)]
        test = candles[(when >= self.test_start) & (when < self.test_end)]
        return train, test


def make_windows(
    index: pd.DatetimeIndex, train_days: float, test_days: float, step_days: float
) -> list[WalkForwardWindow]:
    """Rolling windows that fit inside the data: train, then test right after, every step."""
    for name, value in (("train", train_days), ("test", test_days), ("step", step_days)):
        if not value > 0:
            raise WalkForwardError(f"{name} period must be a positive number of days, got {value}")
    train, test, step = (pd.Timedelta(days=d) for d in (train_days, test_days, step_days))
    end = index[-1] + (index[-1] - index[-2] if len(index) > 1 else pd.Timedelta(0))
    windows, start = [], index[0]
    while start + train + test <= end:
        windows.append(
            WalkForwardWindow(
                len(windows), start, start + train, start + train, start + train + test
            )
        )
        start += step
    return windows
