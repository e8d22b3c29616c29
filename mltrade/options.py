"""Options shared by every command (same names everywhere), their parsers and output helpers."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, is_dataclass
from typing import Annotated

import typer

SAMPLE = "sample"  # the bundled candles (training.data.SAMPLE; not imported: --help stays fast)


def whole_number(text: str | int) -> int:
    """An integer from "100" or "100.0" (MLproject passes numbers as floats)."""
    if isinstance(text, int):
        return text
    try:
        value = float(str(text).strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a whole number") from None
    if not value.is_integer():
        raise typer.BadParameter(f"{text!r} is not a whole number")
    return int(value)


def switch(text: str | bool) -> bool:
    """true/false, yes/no, 1/0 (for options MLproject must pass as values, not flags)."""
    if isinstance(text, bool):
        return text
    words = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    word = str(text).strip().lower()
    if word not in words:
        raise typer.BadParameter(f"expected true or false, got {text!r}")
    return words[word]


def parse_values(pairs: Iterable[str]) -> dict[str, int | float | str]:
    """`key=value` strings -> {key: value}, values as int, float or str."""
    out: dict[str, int | float | str] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--param needs KEY=VALUE, got {pair!r}")
        for cast in (int, float):
            try:
                out[key.strip()] = cast(raw)
                break
            except ValueError:
                continue
        else:
            out[key.strip()] = raw
    return out


def symbols_of(symbol: str, symbols: str) -> tuple[str, ...]:
    """--symbols (comma-separated, forecast one first) if given, else --symbol.

    MLproject renders an empty string parameter as ''; stray quotes count as nothing.
    """
    names = [s.strip().strip("'\"") for s in symbols.split(",")]
    return tuple(n for n in names if n) or (symbol,)


Int = Annotated[int, typer.Option(parser=whole_number, metavar="INTEGER")]
Symbol = Annotated[str, typer.Option("--symbol", help="The symbol to forecast, e.g. BTC/USDT.")]
Symbols = Annotated[
    str,
    typer.Option(
        "--symbols", help="Comma-separated symbols for multi-asset models, the forecast one first."
    ),
]
DataPath = Annotated[
    str,
    typer.Option(
        "--data-path", help="CSV/Parquet file, 'sample' (bundled candles) or '' (live via ccxt)."
    ),
]
Interval = Annotated[str, typer.Option("--interval", help="Candle interval, e.g. 1h.")]
Exchange = Annotated[str, typer.Option("--exchange", help="ccxt exchange id for live data.")]
ModelName = Annotated[str, typer.Option("--model-name", help="Registered model name.")]
ModelVersion = Annotated[
    str, typer.Option("--model-version", help="A version number, an alias or 'latest'.")
]
ExperimentName = Annotated[
    str,
    typer.Option(
        "--experiment-name", help="MLflow experiment (under `mlflow run`: the launcher's)."
    ),
]
Params = Annotated[
    list[str],
    typer.Option(
        "--param", metavar="KEY=VALUE", help="Any other model config value, e.g. hidden_units=32."
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def days_back_option(default_help: str = "Days of candles; 0 keeps all.") -> object:
    return typer.Option("--days-back", parser=whole_number, metavar="INTEGER", help=default_help)


def plain(value: object) -> object:
    """Dataclasses and mappings as JSON-ready values."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def finite_json(value: object) -> object:
    """`value` with every non-finite float spelled "inf", "-inf" or "nan": JSON has no such
    numbers, and a profit factor with no losing trade is infinite."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


def emit(result: object, as_json: bool, lines: Iterable[str]) -> None:
    """Print the result: JSON (one strict document) or the given human-readable lines."""
    if as_json:
        document = json.loads(json.dumps(plain(result), default=str))  # nested dataclasses too
        typer.echo(json.dumps(finite_json(document), indent=1, allow_nan=False))
    else:
        for line in lines:
            typer.echo(line)
