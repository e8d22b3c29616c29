"""Loading from files, the bundled sample and a ccxt exchange (a local fake client: no network)."""

from __future__ import annotations

import time

import ccxt
import pandas as pd
import pytest

from training import data as data_mod
from training.data import DataSourceError, load_data


def test_sample_loads_utc_float_candles():
    df = load_data("ETH/USDT", data_path="sample", days_back=30)
    assert list(df.columns) == ["open", "high", "low", "close", "volume"]
    assert str(df.index.tz) == "UTC" and all(df.dtypes == "float64")
    assert df.index[-1] - df.index[0] < pd.Timedelta(days=30)
    assert len(df) > 700


def test_csv_and_parquet_round_trip(btc, tmp_path):
    csv = tmp_path / "c.csv"
    btc.reset_index().to_csv(csv, index=False)
    parquet = tmp_path / "c.parquet"
    btc.to_parquet(parquet)
    for path in (csv, parquet):
        df = load_data("BTC/USDT", data_path=path, days_back=7)
        pd.testing.assert_frame_equal(
            df, btc[btc.index > btc.index[-1] - pd.Timedelta(days=7)], check_freq=False
        )


def test_unknown_sample_symbol_lists_bundled():
    with pytest.raises(DataSourceError, match="bundled symbols: .*BTCUSDT"):
        load_data("XRP/USDT", data_path="sample")


class FakeExchange:
    """Serves candles like ccxt's fetch_ohlcv: pages of at most `limit`, the newest still open."""

    rateLimit = 1

    def __init__(self, candles: pd.DataFrame, fail: bool = False):
        self.rows = [
            [int(ts.timestamp() * 1000), *row]
            for ts, row in zip(candles.index, candles.to_numpy().tolist(), strict=True)
        ]
        self.calls = 0
        self.fail = fail

    def fetch_ohlcv(self, symbol, timeframe, since, limit):
        self.calls += 1
        if self.fail:
            raise ccxt.NetworkError("binance GET /api/v3/klines failed: timed out")
        return [r for r in self.rows if r[0] >= since][: min(limit, 100)]


@pytest.fixture
def live(btc, monkeypatch, tmp_path):
    """Exchange candles shifted to end at the current (open) hour."""
    now = pd.Timestamp.now(tz="UTC").floor("h")
    candles = btc.iloc[-500:].copy()
    candles.index = pd.date_range(
        end=now, periods=len(candles), freq="h", tz="UTC", name="timestamp"
    )
    fake = FakeExchange(candles)
    monkeypatch.setattr(data_mod, "_make_exchange", lambda exchange: fake)
    monkeypatch.setattr(data_mod, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(time, "sleep", lambda s: None)
    return fake, candles


def test_exchange_paginates_drops_open_candle_and_caches(live, monkeypatch):
    fake, candles = live
    df = load_data("BTC/USDT", days_back=10)
    assert fake.calls >= 3  # 240 hours in pages of at most 100
    assert df.index[-1] == candles.index[-2]  # the current hour is still open: dropped
    pd.testing.assert_frame_equal(
        df, candles.loc[df.index[0] : candles.index[-2]], check_freq=False
    )
    calls = fake.calls
    again = load_data("BTC/USDT", days_back=10)
    assert fake.calls == calls  # served from the disk cache
    pd.testing.assert_frame_equal(again, df)


def test_unreachable_exchange_names_offline_options(btc, monkeypatch, tmp_path):
    monkeypatch.setattr(data_mod, "_make_exchange", lambda e: FakeExchange(btc, fail=True))
    monkeypatch.setattr(data_mod, "CACHE_DIR", tmp_path)
    with pytest.raises(DataSourceError, match="cannot reach binance.*data_path='sample'"):
        load_data("BTC/USDT", days_back=5)
