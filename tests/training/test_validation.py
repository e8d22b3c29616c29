"""Every bad-data case gets an error naming the problem and the row; nothing is fixed silently."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from training.data import load_data, read_ohlcv_file
from training.dataset import NotEnoughDataError, bars_needed, make_splits
from training.validation import DataValidationError, find_gaps, validate_ohlcv


@pytest.fixture
def candles(btc):
    return btc.iloc[:50].copy()


def test_clean_candles_pass_unchanged(candles):
    out = validate_ohlcv(candles)
    pd.testing.assert_frame_equal(out, candles)


def test_missing_column_is_named(candles):
    with pytest.raises(DataValidationError, match=r"missing columns \['volume'\]"):
        validate_ohlcv(candles.drop(columns="volume"))


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("close", np.nan, "NaN or inf in \\['close'\\]"),
        ("volume", np.inf, "NaN or inf in \\['volume'\\]"),
        ("open", 0.0, "non-positive price"),
        ("low", -1.0, "non-positive price"),
        ("volume", -5.0, "negative volume"),
    ],
)
def test_bad_values_name_the_row(candles, column, value, problem):
    candles.iloc[7, candles.columns.get_loc(column)] = value
    stamp = str(candles.index[7])
    with pytest.raises(DataValidationError, match=problem) as err:
        validate_ohlcv(candles)
    assert stamp in str(err.value)


def test_high_below_body_and_low_above_body(candles):
    bad = candles.copy()
    bad.iloc[3, bad.columns.get_loc("high")] = bad.iloc[3][["open", "close"]].max() * 0.999
    with pytest.raises(DataValidationError, match="high below max\\(open, close\\)") as err:
        validate_ohlcv(bad)
    assert str(bad.index[3]) in str(err.value)
    bad = candles.copy()
    bad.iloc[4, bad.columns.get_loc("low")] = bad.iloc[4][["open", "close"]].min() * 1.001
    with pytest.raises(DataValidationError, match="low above min\\(open, close\\)"):
        validate_ohlcv(bad)


def test_duplicate_and_unordered_timestamps(candles):
    dup = pd.concat([candles.iloc[:10], candles.iloc[9:12]])
    with pytest.raises(DataValidationError, match="duplicate timestamps") as err:
        validate_ohlcv(dup)
    assert str(candles.index[9]) in str(err.value)
    swapped = candles.iloc[[0, 1, 3, 2, 4]]
    with pytest.raises(DataValidationError, match="out of order") as err:
        validate_ohlcv(swapped)
    assert str(candles.index[2]) in str(err.value)


def test_non_numeric_values(candles):
    bad = candles.astype(object)
    bad.iloc[2, 0] = "n/a"
    with pytest.raises(DataValidationError, match="non-numeric"):
        validate_ohlcv(bad)


def test_gaps_are_reported(candles, tmp_path, caplog):
    holed = candles.drop(candles.index[10:13])
    gaps = find_gaps(holed, "1h")
    assert list(gaps["missing_bars"]) == [3]
    assert gaps["after"].iloc[0] == candles.index[9]
    path = tmp_path / "holed.csv"
    holed.reset_index().to_csv(path, index=False)
    with caplog.at_level(logging.WARNING):
        load_data("BTC/USDT", data_path=path, days_back=None)
    assert "1 gap(s)" in caplog.text and "3 bars missing" in caplog.text


def test_file_errors_name_the_file(tmp_path, candles):
    path = tmp_path / "x.csv"
    candles.reset_index().rename(columns={"timestamp": "when"}).to_csv(path, index=False)
    with pytest.raises(DataValidationError, match="no time column"):
        read_ohlcv_file(path)
    bad = candles.copy()
    bad.iloc[5, bad.columns.get_loc("close")] = -1
    bad.reset_index().to_csv(path, index=False)
    with pytest.raises(DataValidationError, match=f"{path}: non-positive price"):
        read_ohlcv_file(path)


def test_too_short_data_says_how_many_bars(btc):
    need = bars_needed(60)
    with pytest.raises(NotEnoughDataError, match=f"need at least {need} bars"):
        make_splits({"BTC/USDT": btc.iloc[: need - 1]}, 60)
    splits = make_splits({"BTC/USDT": btc.iloc[:need]}, 60)
    assert all(len(s) >= 20 for s in splits.values())
