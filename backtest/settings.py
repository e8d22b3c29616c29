"""Typed settings and results of the backtest and walk-forward jobs (`backtest.jobs`), built once
at the edge (the `mltrade` CLI, `python -m backtest.run`, MLproject, Python callers)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from backtest.engine import BacktraderEngine
from training.config import ModelConfig
from training.specs import DataSpec


@dataclass(frozen=True)
class StrategySettings:
    """MLBacktraderStrategy's trading knobs (see its docstring)."""

    entry_threshold: float = 0.0
    exit_threshold: float = 0.0
    min_confidence: float = 0.0
    position_size: float = 0.95
    scale_by_confidence: bool = False

    def params(self) -> dict[str, Any]:
        """The strategy parameters these settings stand for."""
        return asdict(self)


@dataclass(frozen=True)
class BacktestSettings:
    """Backtest a registered model on candles and log the run to MLflow.

    Attributes:
        data: the candles (the first symbol is traded); the last 90 days by default.
        model_name, model_version: the registered model (number, alias or "latest").
        engine: cash, fees, slippage, shorting; an engine without an interval gets the data's.
        strategy: MLBacktraderStrategy's knobs.
        experiment_name: MLflow experiment (under `mlflow run`, that run's is used).
        output_dir: where the equity chart PNG and the HTML report are written (None: logged
            to MLflow only).
    """

    data: DataSpec = field(default_factory=lambda: DataSpec(days_back=90))
    model_name: str = "lstm_price_forecast"
    model_version: str = "latest"
    engine: BacktraderEngine = BacktraderEngine()
    strategy: StrategySettings = StrategySettings()
    experiment_name: str = "backtest"
    output_dir: str | None = "reports"


@dataclass(frozen=True)
class WalkForwardSettings:
    """Retrain per window and backtest in and out of sample (WalkForwardAnalyzer).

    Attributes:
        data: the candles of one symbol; every candle by default (windows need months).
        model_config: the model trained per window (None: the LSTM's defaults).
        train_days, test_days, step_days: window geometry in days.
        engine, strategy: as in BacktestSettings.
        num_cpus_per_task, num_gpus_per_task: Ray resources per window.
        parallel: windows as Ray tasks; False runs them one after another in this process.
        experiment_name, output_dir: as in BacktestSettings.
        show_progress: a progress bar on stderr with each window's test return (only when
            stderr is a terminal).
    """

    data: DataSpec = field(default_factory=lambda: DataSpec(days_back=None))
    model_config: ModelConfig | None = None
    train_days: float = 180
    test_days: float = 30
    step_days: float = 30
    engine: BacktraderEngine = BacktraderEngine()
    strategy: StrategySettings = StrategySettings()
    num_cpus_per_task: float = 1.0
    num_gpus_per_task: float = 0.0
    parallel: bool = True
    experiment_name: str = "walk_forward"
    output_dir: str | None = "reports"
    show_progress: bool = True


@dataclass(frozen=True)
class BacktestJobResult:
    """A logged backtest: its MLflow run, chart (PNG), interactive report (HTML) and flat
    metrics (the strategy's, then the benchmark's prefixed `benchmark_`)."""

    run_id: str
    report_path: str | None
    model_name: str
    model_version: int
    metrics: dict[str, float]
    html_report_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The flat record the CLI prints: run_id, reports and the metrics."""
        return {
            "run_id": self.run_id,
            "report": self.report_path,
            "html_report": self.html_report_path,
            **self.metrics,
        }


@dataclass(frozen=True)
class WalkForwardJobResult:
    """A logged walk-forward analysis: its MLflow parent run, chart (PNG), interactive report
    (HTML), windows and summary."""

    run_id: str
    report_path: str | None
    summary: dict
    windows: list[dict]
    html_report_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record the CLI prints: run_id, reports and the summary (train, test,
        degradation)."""
        return {
            "run_id": self.run_id,
            "report": self.report_path,
            "html_report": self.html_report_path,
            **self.summary,
        }
