"""`mltrade train` and `mltrade tune`: build typed settings from options, call the library."""

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
    Params,
    Symbol,
    Symbols,
    days_back_option,
    emit,
    parse_values,
    switch,
    symbols_of,
    whole_number,
)
from training.config import ModelConfig

# Literal, so `--help` needs no torch import; training.models.get_model_spec checks the value.
CHOICES = "{cnn_lstm,lstm,transformer}"
ModelType = Annotated[str, typer.Option("--model-type", help=f"Model type, one of {CHOICES}.")]
DaysBack = Annotated[int, days_back_option()]
NoRegister = Annotated[
    bool, typer.Option("--no-register", help="Log the model without registering it.")
]


def train(
    model_type: ModelType = "lstm",
    model_name: ModelName = "lstm_price_forecast",
    symbol: Symbol = "BTC/USDT",
    symbols: Symbols = "",
    data_path: DataPath = SAMPLE,
    interval: Interval = "1h",
    days_back: DaysBack = 365,
    exchange: Exchange = "binance",
    experiment_name: ExperimentName = "lstm_forecasting",
    sequence_length: Int = ModelConfig.sequence_length,
    epochs: Int = ModelConfig.epochs,
    learning_rate: float = ModelConfig.learning_rate,
    batch_size: Int = ModelConfig.batch_size,
    confidence: Annotated[
        float, typer.Option(help="Coverage of the prediction interval.")
    ] = ModelConfig.confidence,
    seed: Int = ModelConfig.seed,
    param: Params = None,
    num_workers: Annotated[
        int,
        typer.Option(
            parser=whole_number, metavar="INTEGER", help="Ray Train workers; 0: in process."
        ),
    ] = 0,
    cpus_per_worker: Annotated[
        float | None, typer.Option(help="CPUs per Ray Train worker (default: an even share).")
    ] = None,
    no_register: NoRegister = False,
    json_out: Json = False,
):
    """Train a forecaster, log the run to MLflow and register the model."""
    from training.experiment import train_model
    from training.models import build_config
    from training.specs import DataSpec, TrainSettings

    data = DataSpec(symbols_of(symbol, symbols), interval, days_back, data_path, exchange)
    values = {
        "sequence_length": sequence_length,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "confidence": confidence,
        "seed": seed,
        **parse_values(param or []),
    }
    settings = TrainSettings(
        data=data,
        config=build_config(model_type, values, num_assets=len(data.symbols)),
        model_type=model_type,
        model_name=model_name,
        experiment_name=experiment_name,
        num_workers=num_workers,
        cpus_per_worker=cpus_per_worker,
        register=not no_register,
    )
    result = train_model(settings)
    emit(
        result,
        json_out,
        [
            f"run_id={result.run_id} model_uri={result.model_uri} "
            f"registered={model_name if settings.register else None} version={result.version}",
            *(f"  test_{k}: {v:.6g}" for k, v in result.metrics.items()),
        ],
    )
    return result


def tune(
    model_type: ModelType = "lstm",
    model_name: ModelName = "lstm_price_forecast",
    symbol: Symbol = "BTC/USDT",
    symbols: Symbols = "",
    data_path: DataPath = SAMPLE,
    interval: Interval = "1h",
    days_back: DaysBack = 365,
    exchange: Exchange = "binance",
    experiment_name: ExperimentName = "lstm_tuning",
    num_samples: Int = 10,
    max_concurrent_trials: Int = 2,
    epochs: Annotated[
        int, typer.Option(parser=whole_number, metavar="INTEGER", help="Most epochs per trial.")
    ] = 20,
    cpus_per_trial: Annotated[
        float | None, typer.Option(help="CPUs per trial (default: an even share).")
    ] = None,
    gpus_per_trial: Annotated[
        float | None, typer.Option(help="Default: share the cluster's GPUs, if any.")
    ] = None,
    use_optuna: Annotated[
        str,  # a value, not a flag: MLproject passes -P use_optuna=true
        typer.Option(parser=switch, metavar="BOOLEAN", help="Sample with Optuna (true/false)."),
    ] = "false",
    scheduler: Annotated[str, typer.Option(help="asha (stop weak trials early) or fifo.")] = "asha",
    grace_period: Int = 2,
    reduction_factor: Int = 2,
    seed: Int = 42,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", metavar="KEY=VALUE", help="Fix a config value for every trial."),
    ] = None,
    storage_path: Annotated[str | None, typer.Option(help="Ray Tune results directory.")] = None,
    no_register: NoRegister = False,
    json_out: Json = False,
):
    """Sweep hyperparameters with Ray Tune, log every trial, register the best model."""
    from training.specs import DataSpec, TuneSettings
    from training.tune import run_sweep

    settings = TuneSettings(
        data=DataSpec(symbols_of(symbol, symbols), interval, days_back, data_path, exchange),
        model_type=model_type,
        model_name=model_name,
        experiment_name=experiment_name,
        num_samples=num_samples,
        max_concurrent_trials=max_concurrent_trials,
        epochs=epochs,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        use_optuna=use_optuna,
        scheduler=scheduler,
        grace_period=grace_period,
        reduction_factor=reduction_factor,
        fixed=parse_values(param or []),
        seed=seed,
        storage_path=storage_path,
        register=not no_register,
    )
    result = run_sweep(settings)
    emit(
        result,
        json_out,
        [
            f"parent_run_id={result.parent_run_id} best_run_id={result.best_run_id} "
            f"registered={model_name} version={result.version} "
            f"best_val_loss={result.best_val_loss:.6g}",
            f"  best config: {dict(result.best_config)}",
        ],
    )
    return result
