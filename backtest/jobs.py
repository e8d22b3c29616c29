"""The backtest and walk-forward jobs: what `mltrade backtest`, `mltrade walk-forward`, the
MLproject entries and `python -m backtest.run` run, as library functions on typed settings."""

from __future__ import annotations

from dataclasses import replace

import mlflow
import pandas as pd

from backtest.engine import BacktraderEngine
from backtest.html_report import backtest_report, walk_forward_report
from backtest.report import log_backtest, save_html
from backtest.settings import (
    BacktestJobResult,
    BacktestSettings,
    WalkForwardJobResult,
    WalkForwardSettings,
)
from backtest.strategies import MLBacktraderStrategy, forecast_table
from backtest.walk_forward import WalkForwardAnalyzer, as_model_config
from training.specs import DataSpec


def _engine(engine: BacktraderEngine, data: DataSpec) -> BacktraderEngine:
    """The engine, annualising at the data's interval unless it names its own."""
    return engine if engine.interval else replace(engine, interval=data.interval)


def _tags(data: DataSpec, candles: pd.DataFrame, **model: object) -> dict[str, str]:
    """Tags to filter runs by in the MLflow UI: symbol, interval, the model, the data range."""
    tags = {"symbol": data.symbol, "interval": data.interval, **model}
    tags |= {"data_start": candles.index[0], "data_end": candles.index[-1]}
    return {k: str(v) for k, v in tags.items()}


def run_backtest_job(settings: BacktestSettings) -> BacktestJobResult:
    """Backtest a registered model with MLBacktraderStrategy; log the run, its parameters,
    metrics, trades and equity chart to MLflow.

    Raises:
        ModelNotFoundError: no such registered model or version (before any data is traded).
    """
    from training.tracking import load_model, run_name_of, setup_tracking, start_run

    setup_tracking()
    candles = settings.data.load()[settings.data.symbol]
    forecaster, version = load_model(settings.model_name, settings.model_version)
    params = {
        "model_name": settings.model_name,
        "model_version": str(version.version),
        **settings.strategy.params(),
    }
    result = _engine(settings.engine, settings.data).run_backtest(
        candles, MLBacktraderStrategy, {**params, "forecaster": forecaster}
    )
    data = settings.data
    run_name = run_name_of("backtest", settings.model_name, f"v{version.version}", data.symbol)
    tags = _tags(data, candles, model_name=settings.model_name, model_version=version.version)
    with start_run(settings.experiment_name, run_name, tags) as run:
        # Prefixed so they never clash with the params `mlflow run` logs for the entry.
        mlflow.log_params(
            {
                **{f"strategy_{k}": v for k, v in params.items()},
                "model_run_id": version.run_id,
                "data_symbol": settings.data.symbol,
                "data_interval": settings.data.interval,
                "data_bars": len(candles),
                "data_start": str(candles.index[0]),
                "data_end": str(candles.index[-1]),
                **{f"engine_{k}": v for k, v in result.settings.items()},
            }
        )
        path = log_backtest(result, output_dir=settings.output_dir)
        # the strategy's forecasts again (one batched call), for the report's interval band
        report = backtest_report(
            result, candles, forecast_table(forecaster, candles), f"Backtest {run_name}"
        )
        html = save_html(report, "backtest_report.html", settings.output_dir)
    return BacktestJobResult(
        run_id=run.info.run_id,
        report_path=None if path is None else str(path),
        html_report_path=None if html is None else str(html),
        model_name=settings.model_name,
        model_version=int(version.version),
        metrics=result.summary(),
    )


def run_walk_forward_job(settings: WalkForwardSettings) -> WalkForwardJobResult:
    """Walk-forward analysis of MLBacktraderStrategy: one MLflow parent run, a nested run (and
    logged model) per window, the summary and chart on the parent."""
    from training.models import model_type_of
    from training.tracking import run_name_of

    data = settings.data
    candles = data.load()[data.symbol]
    model_type = model_type_of(as_model_config(settings.model_config))
    analyzer = WalkForwardAnalyzer(
        train_period_days=settings.train_days,
        test_period_days=settings.test_days,
        step_days=settings.step_days,
        engine=_engine(settings.engine, settings.data),
        num_cpus_per_task=settings.num_cpus_per_task,
        num_gpus_per_task=settings.num_gpus_per_task,
        parallel=settings.parallel,
        experiment_name=settings.experiment_name,
        show_progress=settings.show_progress,
        output_dir=settings.output_dir,
    )
    result = analyzer.analyze(
        candles,
        MLBacktraderStrategy,
        model_config=settings.model_config,
        strategy_params=settings.strategy.params(),
        symbol=data.symbol,
        run_name=run_name_of("walk_forward", model_type, data.symbol, data.interval),
    )
    client = mlflow.MlflowClient()
    for key, value in _tags(data, candles, model_type=model_type).items():
        client.set_tag(result.run_id, key, value)
    html = save_html(
        walk_forward_report(result), "walk_forward_report.html", settings.output_dir, result.run_id
    )
    return WalkForwardJobResult(
        run_id=result.run_id,
        report_path=None if result.report_path is None else str(result.report_path),
        html_report_path=None if html is None else str(html),
        summary=result.summary,
        windows=result.windows,
    )
