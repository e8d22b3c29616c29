"""`mltrade backtest` and `mltrade walk-forward`: typed settings -> backtest.jobs."""

from __future__ import annotations

from typing import Annotated

import typer

from mltrade.options import (
    SAMPLE,
    DataPath,
    Exchange,
    ExperimentName,
    Int,
    Interval,
    Json,
    ModelName,
    ModelVersion,
    Params,
    Symbol,
    days_back_option,
    emit,
    parse_values,
)

ENGINE = "engine"
STRATEGY = "strategy"
InitialCash = Annotated[float, typer.Option(rich_help_panel=ENGINE, help="Starting cash.")]
Commission = Annotated[float, typer.Option(rich_help_panel=ENGINE, help="Fraction per fill.")]
Slippage = Annotated[float, typer.Option(rich_help_panel=ENGINE, help="Fraction per fill.")]
AllowShort = Annotated[bool, typer.Option("--allow-short", help="Allow short positions.")]
EntryThreshold = Annotated[
    float, typer.Option(help="Predicted return needed to enter, above the round-trip cost.")
]
ExitThreshold = Annotated[float, typer.Option(help="Predicted return below which to exit.")]
MinConfidence = Annotated[
    float, typer.Option(help="Share of the prediction interval that must agree, 0..1.")
]
PositionSize = Annotated[float, typer.Option(help="Fraction of equity per position.")]
ScaleByConfidence = Annotated[
    bool, typer.Option("--scale-by-confidence", help="Size positions by confidence.")
]
OutputDir = Annotated[
    str, typer.Option(help="Where the PNG charts and the HTML report are written ('' : none).")
]


def _engine_and_strategy(
    interval, initial_cash, commission, slippage, allow_short, entry, exit_, confidence, size, scale
) -> dict:
    from backtest.engine import BacktraderEngine
    from backtest.settings import StrategySettings

    return {
        "engine": BacktraderEngine(initial_cash, commission, slippage, allow_short, interval),
        "strategy": StrategySettings(entry, exit_, confidence, size, scale),
    }


def backtest(
    model_name: ModelName = "lstm_price_forecast",
    model_version: ModelVersion = "latest",
    symbol: Symbol = "BTC/USDT",
    data_path: DataPath = SAMPLE,
    interval: Interval = "1h",
    days_back: Annotated[int, days_back_option()] = 90,
    exchange: Exchange = "binance",
    initial_cash: InitialCash = 10_000.0,
    commission: Commission = 0.001,
    slippage: Slippage = 0.0005,
    allow_short: AllowShort = False,
    entry_threshold: EntryThreshold = 0.0,
    exit_threshold: ExitThreshold = 0.0,
    min_confidence: MinConfidence = 0.0,
    position_size: PositionSize = 0.95,
    scale_by_confidence: ScaleByConfidence = False,
    experiment_name: ExperimentName = "backtest",
    output_dir: OutputDir = "reports",
    json_out: Json = False,
) -> dict:
    """Backtest a registered model on candles; log the run, metrics, equity chart and HTML
    report (also written to --output-dir; the paths are printed)."""
    from backtest.jobs import run_backtest_job
    from backtest.settings import BacktestSettings
    from training.specs import DataSpec

    settings = BacktestSettings(
        data=DataSpec((symbol,), interval, days_back, data_path, exchange),
        model_name=model_name,
        model_version=model_version,
        experiment_name=experiment_name,
        output_dir=output_dir or None,
        **_engine_and_strategy(
            interval,
            initial_cash,
            commission,
            slippage,
            allow_short,
            entry_threshold,
            exit_threshold,
            min_confidence,
            position_size,
            scale_by_confidence,
        ),
    )
    out = run_backtest_job(settings).to_dict()
    emit(out, json_out, [f"{k}: {v}" for k, v in out.items()])
    return out


def walk_forward(
    model_type: Annotated[str, typer.Option(help="A single-asset model type.")] = "lstm",
    symbol: Symbol = "BTC/USDT",
    data_path: DataPath = SAMPLE,
    interval: Interval = "1h",
    days_back: Annotated[int, days_back_option("Days of candles; 0 (default) keeps all.")] = 0,
    exchange: Exchange = "binance",
    train_days: float = 180,
    test_days: float = 30,
    step_days: float = 30,
    sequence_length: Int = 48,
    epochs: Int = 10,
    param: Params = None,
    initial_cash: InitialCash = 10_000.0,
    commission: Commission = 0.001,
    slippage: Slippage = 0.0005,
    allow_short: AllowShort = False,
    entry_threshold: EntryThreshold = 0.0,
    exit_threshold: ExitThreshold = 0.0,
    min_confidence: MinConfidence = 0.0,
    position_size: PositionSize = 0.95,
    scale_by_confidence: ScaleByConfidence = False,
    num_cpus_per_task: float = 1.0,
    num_gpus_per_task: float = 0.0,
    sequential: Annotated[
        bool, typer.Option("--sequential", help="Run windows one after another, not on Ray.")
    ] = False,
    experiment_name: ExperimentName = "walk_forward",
    output_dir: OutputDir = "reports",
    json_out: Json = False,
) -> dict:
    """Retrain per window and backtest out of sample, windows in parallel on Ray; log the runs,
    the chart and the HTML report (also written to --output-dir; the paths are printed)."""
    from backtest.jobs import run_walk_forward_job
    from backtest.settings import WalkForwardSettings
    from training.models import build_config
    from training.specs import DataSpec

    values = {"sequence_length": sequence_length, "epochs": epochs, **parse_values(param or [])}
    settings = WalkForwardSettings(
        data=DataSpec((symbol,), interval, days_back, data_path, exchange),
        model_config=build_config(model_type, values),
        train_days=train_days,
        test_days=test_days,
        step_days=step_days,
        num_cpus_per_task=num_cpus_per_task,
        num_gpus_per_task=num_gpus_per_task,
        parallel=not sequential,
        experiment_name=experiment_name,
        output_dir=output_dir or None,
        **_engine_and_strategy(
            interval,
            initial_cash,
            commission,
            slippage,
            allow_short,
            entry_threshold,
            exit_threshold,
            min_confidence,
            position_size,
            scale_by_confidence,
        ),
    )
    out = run_walk_forward_job(settings).to_dict()
    emit(out, json_out, [f"{k}: {v}" for k, v in out.items()])
    return out
