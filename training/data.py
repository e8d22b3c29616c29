"""Loading candles: a CSV/Parquet file, the bundled sample, or a ccxt exchange with a disk cache."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pandas as pd

from training.validation import (
    OHLCV_COLUMNS,
    DataValidationError,
    find_gaps,
    interval_to_offset,
    validate_ohlcv,
)

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = PROJECT_ROOT / "data" / "ohlcv"
SAMPLE_DIR_ENV = "MLTRADE_SAMPLE_DIR"  # another directory of <SYMBOL>_<interval>.csv.gz files
CACHE_DIR = PROJECT_ROOT / "data" / "cache"
SAMPLE = "sample"


class DataSourceError(RuntimeError):
    """Raised when candles cannot be obtained from the requested source."""


def sample_dir() -> Path:
    """Where data_path="sample" reads: data/ohlcv, or the directory named by MLTRADE_SAMPLE_DIR
    (files named like the bundled ones; tests use it to run commands verbatim on less data)."""
    return Path(os.environ.get(SAMPLE_DIR_ENV) or SAMPLE_DIR)


def sample_path(symbol: str, interval: str = "1h") -> Path:
    """Path of the bundled sample file for a symbol ("BTC/USDT" -> data/ohlcv/BTCUSDT_1h.csv.gz)."""
    directory = sample_dir()
    path = directory / f"{symbol.replace('/', '')}_{interval}.csv.gz"
    if not path.exists():
        have = sorted(p.name.split("_")[0] for p in directory.glob(f"*_{interval}.csv.gz"))
        raise DataSourceError(
            f"no bundled {interval} sample for {symbol}; bundled symbols: {have or 'none'}"
        )
    return path


def read_ohlcv_file(path: str | Path) -> pd.DataFrame:
    """Read candles from CSV (optionally compressed) or Parquet and validate them.

    The file needs a time column (timestamp, datetime, date or time; epoch milliseconds or
    ISO strings, naive times taken as UTC) or a DatetimeIndex (Parquet), plus OHLCV columns.
    """
    path = Path(path)
    if not path.exists():
        raise DataSourceError(f"data file not found: {path}")
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path)
    df.columns = [str(c).strip().lower() for c in df.columns]
    if not isinstance(df.index, pd.DatetimeIndex):
        time_cols = [c for c in ("timestamp", "datetime", "date", "time") if c in df.columns]
        if not time_cols:
            raise DataValidationError(
                f"{path}: no time column; expected one of timestamp, datetime, date, time"
            )
        col = df[time_cols[0]]
        unit = "ms" if pd.api.types.is_numeric_dtype(col) else None
        try:
            df.index = pd.to_datetime(col, unit=unit, utc=True)
        except (ValueError, TypeError) as exc:
            raise DataValidationError(f"{path}: unparseable {time_cols[0]!r} ({exc})") from exc
        df = df.drop(columns=time_cols[0])
    df.index = _as_utc(df.index)
    df.index.name = "timestamp"
    return validate_ohlcv(df, source=str(path))


def _as_utc(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")


def _make_exchange(exchange: str):
    import ccxt  # imported here: only the live source needs it

    if not hasattr(ccxt, exchange):
        raise DataSourceError(f"unknown ccxt exchange {exchange!r}")
    return getattr(ccxt, exchange)({"enableRateLimit": True, "timeout": 15000})


def fetch_exchange_ohlcv(
    symbol: str, interval: str, since: pd.Timestamp, exchange: str = "binance", limit: int = 1000
) -> pd.DataFrame:
    """Fetch closed candles from `since` to now through ccxt, page by page.

    Sleeps the exchange's rate limit between pages and drops the still-open last candle.
    """
    import ccxt

    client = _make_exchange(exchange)
    step_ms = int(pd.Timedelta(interval_to_offset(interval)).total_seconds() * 1000)
    now_ms = int(time.time() * 1000)
    cursor = int(since.timestamp() * 1000)
    rows: list[list[float]] = []
    try:
        while cursor + step_ms <= now_ms:  # stop once only the open candle is left
            page = client.fetch_ohlcv(symbol, timeframe=interval, since=cursor, limit=limit)
            if not page:
                break
            rows.extend(page)
            cursor = int(page[-1][0]) + step_ms  # exchanges may cap pages below `limit`
            time.sleep(getattr(client, "rateLimit", 0) / 1000)
    except (ccxt.NetworkError, ccxt.ExchangeNotAvailable) as exc:
        raise DataSourceError(
            f"cannot reach {exchange} for {symbol} ({type(exc).__name__}: {exc}). Offline options: "
            f"data_path=<your CSV or Parquet file>, or data_path='{SAMPLE}' for the bundled sample "
            f"of real Binance candles"
        ) from exc
    df = pd.DataFrame(rows, columns=["timestamp", *OHLCV_COLUMNS]).drop_duplicates("timestamp")
    df = df[df["timestamp"] + step_ms <= now_ms]  # the last candle is still open
    df.index = pd.to_datetime(df.pop("timestamp"), unit="ms", utc=True)
    df.index.name = "timestamp"
    return df.astype("float64")


def _cache_file(exchange: str, symbol: str, interval: str) -> Path:
    return CACHE_DIR / f"{exchange}_{symbol.replace('/', '')}_{interval}.parquet"


def load_exchange_cached(
    symbol: str, interval: str, since: pd.Timestamp, exchange: str = "binance"
) -> pd.DataFrame:
    """Candles from the disk cache, fetching only what is older or newer than the cache holds."""
    path = _cache_file(exchange, symbol, interval)
    cached = pd.read_parquet(path) if path.exists() else None
    step = pd.Timedelta(interval_to_offset(interval))
    parts = [] if cached is None else [cached]
    if cached is None or cached.index[0] - since >= step:  # cache starts too late
        parts.append(fetch_exchange_ohlcv(symbol, interval, since, exchange))
    elif pd.Timestamp.now(tz="UTC") - cached.index[-1] >= 2 * step:
        parts.append(fetch_exchange_ohlcv(symbol, interval, cached.index[-1] + step, exchange))
    df = pd.concat(parts).sort_index()
    df = df[~df.index.duplicated(keep="last")]
    if cached is None or len(df) != len(cached):
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(path)
    return df[df.index >= since]


def load_data(
    symbol: str,
    interval: str = "1h",
    days_back: int | None = 30,
    data_path: str | Path | None = None,
    exchange: str = "binance",
) -> pd.DataFrame:
    """Load validated OHLCV candles for one symbol.

    Args:
        symbol: market symbol such as "BTC/USDT".
        interval: bar interval ("1h", "15m", "1d").
        days_back: keep the last this many days (counted back from the newest candle of a file,
            or from now for an exchange); None or 0 keeps everything.
        data_path: a CSV or Parquet file; "sample" for the bundled real Binance sample; None to
            fetch from the exchange through ccxt (cached under data/cache).
        exchange: ccxt exchange id used when data_path is None.

    Returns:
        Float columns open, high, low, close, volume on a UTC DatetimeIndex of candle open times.
    """
    interval_to_offset(interval)  # reject a bad interval before any I/O
    if data_path is None or str(data_path) == "":
        since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=days_back or 365)
        df = validate_ohlcv(load_exchange_cached(symbol, interval, since, exchange), exchange)
    else:
        path = sample_path(symbol, interval) if str(data_path) == SAMPLE else data_path
        df = read_ohlcv_file(path)
        if days_back:
            df = df[df.index > df.index[-1] - pd.Timedelta(days=days_back)]
    gaps = find_gaps(df, interval)
    if len(gaps):
        log.warning(
            "%s: %d gap(s) in %s candles, %d bars missing in total; first after %s",
            symbol,
            len(gaps),
            interval,
            gaps["missing_bars"].sum(),
            gaps["after"].iloc[0],
        )
    return df


def align_symbols(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Keep only the timestamps every symbol has, so multi-asset windows line up bar for bar."""
    common = None
    for df in frames.values():
        common = df.index if common is None else common.intersection(df.index)
    if common is None or len(common) == 0:
        raise DataValidationError(f"symbols {list(frames)} share no timestamps")
    return {symbol: df.loc[common] for symbol, df in frames.items()}
