"""The backtest and walk-forward jobs: what `mltrade backtest`, `mltrade walk-forward`, the
MLproject entries and `python -m backtest.run` run, as library functions on typed settings."""

from __future__ import annotations

from dataclasses import replace

import mlflow

from backtest.engine import BacktraderEngine
from backtest.report import log_backtest
from backtest.settings import (
    BacktestJobResult,
    BacktestSettings,
    WalkForwardJobResult,
    WalkForwardSettings,
)
from backtest.strategies import MLBacktraderStrategy
from backtest.walk_forward import WalkForwardAnalyzer
from training.specs import DataSpec


def _engine(engine: BacktraderEngine, data: DataSpec) -> BacktraderEngine:
    """The engine, annualising at the data's interval unless it names its own."""
    return engine if engine.interval else replace(engine, interval=data.interval)


def run_backtest_job(settings: BacktestSettings) -> BacktestJobResult:
    """Backtest a registered model with MLBacktraderStrategy; log the run, its parameters,
    metrics, trades and equity chart to MLflow.

    Raises:
        ModelNotFoundError: no such registered model or version (before any data is traded).
    """
    from training.registry import resolve_version
    from training.tracking import setup_tracking, start_run

    setup_tracking()
    candles = settings.data.load()[settings.data.symbol]
    version = resolve_version(settings.model_name, settings.model_version)  # fail before work
    params = {
        "model_name": settings.model_name,
        "model_version": str(version.version),
        **settings.strategy.params(),
    }
    result = _engine(settings.engine, settings.data).run_backtest(
        candles, MLBacktraderStrategy, params
    )
    run_name = f"backtest_{settings.model_name}_v{version.version}"
    with start_run(settings.experiment_name, run_name) as run:
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
    return BacktestJobResult(
        run_id=run.info.run_id,
        report_path=None if path is None else str(path),
        model_name=settings.model_name,
        model_version=int(version.version),
        metrics=result.summary(),
    )


def run_walk_forward_job(settings: WalkForwardSettings) -> WalkForwardJobResult:
    """Walk-forward analysis of MLBacktraderStrategy: one MLflow parent run, a nested run (and
    logged model) per window, the summary and chart on the parent."""
    candles = settings.data.load()[settings.data.symbol]
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
        symbol=settings.data.symbol,
    )
    return WalkForwardJobResult(
        run_id=result.run_id,
        report_path=None if result.report_path is None else str(result.report_path),
        summary=result.summary,
        windows=result.windows,
    )
