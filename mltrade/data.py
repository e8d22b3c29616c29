"""`mltrade data {fetch,validate}`: get candles into a file, check a file of candles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mltrade.base import Command, new_app
from mltrade.options import (
    SAMPLE,
    DataPath,
    Exchange,
    Interval,
    Json,
    Symbol,
    days_back_option,
    emit,
)

app = new_app(help="Fetch candles to a file; validate a file of candles.")


def _summary(df, interval: str, source: str) -> dict:
    from training.validation import find_gaps

    gaps = find_gaps(df, interval)
    return {
        "source": source,
        "bars": len(df),
        "start": str(df.index[0]),
        "end": str(df.index[-1]),
        "gaps": len(gaps),
        "missing_bars": int(gaps["missing_bars"].sum()) if len(gaps) else 0,
    }


@app.command("fetch", cls=Command)
def fetch(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="CSV (optionally .gz) or .parquet file to write.")
    ],
    symbol: Symbol = "BTC/USDT",
    data_path: DataPath = "",
    interval: Interval = "1h",
    days_back: Annotated[int, days_back_option("Days of candles (0: all; live: a year).")] = 365,
    exchange: Exchange = "binance",
    json_out: Json = False,
) -> dict:
    """Load validated candles (live from the exchange by default) and write them to a file."""
    from training.data import load_data

    df = load_data(symbol, interval, days_back or None, data_path or None, exchange)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".parquet":
        df.to_parquet(output)
    else:
        df.to_csv(output, index_label="timestamp")
    out = {**_summary(df, interval, data_path or exchange), "output": str(output)}
    emit(out, json_out, [f"wrote {out['bars']} bars {out['start']} .. {out['end']} to {output}"])
    return out


@app.command("validate", cls=Command)
def validate(
    path: Annotated[str, typer.Argument(help=f"CSV/Parquet file of candles, or '{SAMPLE}'.")],
    symbol: Annotated[str, typer.Option(help="The symbol, for 'sample'.")] = "BTC/USDT",
    interval: Interval = "1h",
    json_out: Json = False,
) -> dict:
    """Check a file of candles (columns, values, order); report its range and gaps."""
    from training.data import read_ohlcv_file, sample_path

    file = sample_path(symbol, interval) if path == SAMPLE else Path(path)
    out = _summary(read_ohlcv_file(file), interval, str(file))
    emit(
        out,
        json_out,
        [
            f"ok: {out['bars']} bars {out['start']} .. {out['end']}, {out['gaps']} gap(s) "
            f"({out['missing_bars']} missing bars)"
        ],
    )
    return out
