"""Walk-forward analysis: retrain per window, backtest in and out of sample, windows as Ray tasks.

Each window trains a fresh forecaster on its training period only (training.fit), backtests it
there (in sample) and on the test period that follows (out of sample): `backtest.window_tasks`
runs these steps as Ray tasks or in process. Tasks return metrics and the model bundle's bytes;
the driver alone writes to MLflow (one parent run, a nested run per window), so many tasks never
race on one SQLite file.

Ray workers import the `backtest` package, so this module imports MLflow, the charts and the
progress bar only in the driver's code. The first tasks start before the driver sets up MLflow:
workers import and train while it does.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from contextlib import closing
from dataclasses import asdict, dataclass

import pandas as pd

from backtest.engine import BacktraderEngine, check_strategy_params
from backtest.results import WalkForwardResult, summarize
from backtest.strategies import MLBacktraderStrategy
from backtest.window_tasks import (
    InProcessWindows,
    RayWindows,
    WindowOutcome,
    load_bundle,
    run_window,
    torch_threads_as,
    window_params,
)
from backtest.windows import WalkForwardError, WalkForwardWindow, make_windows
from training.config import ModelConfig
from training.dataset import bars_needed
from training.models import get_model_spec, model_type_of
from training.validation import validate_ohlcv

__all__ = [
    "WalkForwardAnalyzer",
    "WalkForwardResult",
    "as_model_config",
    "run_window",
    "summarize",
    "window_params",
]


def as_model_config(model_config: ModelConfig | Mapping | None) -> ModelConfig:
    """The typed config every window's model is trained with.

    Args:
        model_config: a model config object (e.g. LSTMModelConfig(sequence_length=48)); None
            for the LSTM's defaults; or, as in earlier versions, a mapping
            {"model_type": "lstm", **config fields} (model_type defaults to "lstm").

    Raises:
        ValueError: unknown model type or config keys.
        TypeError: anything else.
    """
    if model_config is None:
        return get_model_spec("lstm").config_class()
    if isinstance(model_config, ModelConfig):
        return model_config
    if isinstance(model_config, Mapping):
        values = dict(model_config)
        model_type = values.pop("model_type", "lstm")  # the mapping form names its model type
        return get_model_spec(model_type).config_class.from_dict(values)
    raise TypeError(
        "model_config must be a model config (e.g. LSTMModelConfig(...)), a mapping or None, "
        f"got {type(model_config).__name__}"
    )


@dataclass(frozen=True)
class WalkForwardAnalyzer:
    """Rolling retrain-and-test over calendar windows.

    Attributes:
        train_period_days, test_period_days, step_days: window geometry in days.
        engine: the backtest engine (cash, fees, slippage, shorting).
        num_cpus_per_task, num_gpus_per_task: Ray resources per window.
        torch_threads: torch threads per window, in a task or sequentially; None uses
            num_cpus_per_task (rounded down, at least 1) so tasks never oversubscribe cores.
        parallel: run windows as Ray tasks (local Ray, or the cluster at RAY_ADDRESS); False
            runs them one after another in this process.
        experiment_name: MLflow experiment of the parent run.
        show_progress: a bar of windows done on stderr, with each window's test return, when
            stderr is a terminal.
        output_dir: where to save the walk-forward chart PNG (also logged to MLflow).
    """

    train_period_days: float = 180
    test_period_days: float = 30
    step_days: float = 30
    engine: BacktraderEngine = BacktraderEngine()
    num_cpus_per_task: float = 1.0
    num_gpus_per_task: float = 0.0
    torch_threads: int | None = None
    parallel: bool = True
    experiment_name: str = "walk_forward"
    show_progress: bool = True
    output_dir: str | None = None

    def plan(
        self, data: pd.DataFrame, model_config: ModelConfig | Mapping | None = None
    ) -> tuple[pd.DataFrame, list[WalkForwardWindow], ModelConfig]:
        """Validate the candles (the only time they are) and the config, and lay out the windows
        without training anything.

        Returns:
            (validated candles, windows, the typed model config).
        """
        candles = validate_ohlcv(data, source="walk-forward data")
        config = as_model_config(model_config)
        model_type = model_type_of(config)
        if get_model_spec(model_type).multi_asset:
            raise WalkForwardError(f"{model_type} needs several symbols; walk-forward uses one")
        seq = config.sequence_length
        windows = make_windows(
            candles.index, self.train_period_days, self.test_period_days, self.step_days
        )
        step = (candles.index[1:] - candles.index[:-1]).median() if len(candles) > 1 else None
        need_bars = bars_needed(seq)
        if not windows:
            span = (candles.index[-1] - candles.index[0]) / pd.Timedelta(days=1)
            raise WalkForwardError(
                f"walk-forward data spans {span:.1f} days ({len(candles)} bars) but one window "
                f"needs {self.train_period_days} training + {self.test_period_days} test = "
                f"{self.train_period_days + self.test_period_days} days; load more data or "
                "shorten the periods"
            )
        for window in windows:
            train, test = window.slices(candles)
            if len(train) < need_bars or len(test) < 2:
                per_day = pd.Timedelta(days=1) / step if step else float("nan")
                raise WalkForwardError(
                    f"window {window.index} has {len(train)} training bars and {len(test)} test "
                    f"bars; sequence_length={seq} needs at least {need_bars} training bars "
                    f"({math.ceil(need_bars / per_day)} days at this interval) and 2 test bars: "
                    "lengthen train_period_days or shorten sequence_length"
                )
        return candles, windows, config

    def analyze(
        self,
        data: pd.DataFrame,
        strategy: type = MLBacktraderStrategy,
        model_config: ModelConfig | Mapping | None = None,
        strategy_params: dict | None = None,
        symbol: str = "asset",
        run_name: str | None = None,
    ) -> WalkForwardResult:
        """Retrain and backtest every window, log them to MLflow and summarise.

        Args:
            data: candles of one symbol, e.g. the guide's `historical_data` from the bundled
                candles: `training.data.load_data("BTC/USDT", days_back=None, data_path="sample")`.
            strategy: a backtrader Strategy class taking a `forecast` parameter (each window's
                precomputed forecasts, as MLBacktraderStrategy does) or a `forecaster` one.
            model_config: the model trained per window, e.g. LSTMModelConfig(sequence_length=48,
                epochs=2); None: the LSTM's defaults (see `as_model_config` for the mapping form).
            strategy_params: parameters of the strategy (the model is set per window).
            symbol: the symbol's name, recorded in each model.
            run_name: MLflow name of the parent run.

        Returns:
            WalkForwardResult with windows (dates, train and test metrics, the window's
            MLflow run) and summary (train, test, degradation); a mapping too, so
            `results["summary"]["test"]["avg_return"]` works.
        """
        params = dict(strategy_params or {})
        check_strategy_params(strategy, params)
        if not {"forecaster", "forecast"} & set(strategy.params._getkeys()):
            raise WalkForwardError(
                f"{strategy.__name__} takes no `forecaster` parameter; walk-forward passes each "
                "window's model that way, or its forecasts as `forecast` (see "
                "MLBacktraderStrategy)"
            )
        candles, windows, config = self.plan(data, model_config)
        args = (config, strategy, params, self.engine, symbol)
        began = time.perf_counter()
        # The driver's own torch work (MLflow checks each logged model on its input example) on
        # one thread: a thread pool spinning beside busy workers costs seconds per window.
        with closing(self._start(candles, windows, args)) as outcomes, torch_threads_as(1):
            return self._log_outcomes(outcomes, began, config, params, symbol, run_name)

    def _log_outcomes(
        self,
        outcomes: InProcessWindows | RayWindows,
        began: float,
        config: ModelConfig,
        params: dict,
        symbol: str,
        run_name: str | None,
    ) -> WalkForwardResult:
        """The driver's part: the parent run, a nested run per window as it finishes, the
        summary, chart and result."""
        import mlflow

        from backtest.report import log_metrics, plot_walk_forward, save_figure
        from training.tracking import log_model, setup_tracking, start_run

        setup_tracking()
        rows = []
        nested = mlflow.active_run() is not None
        with start_run(self.experiment_name, run_name or "walk_forward", nested=nested) as parent:
            mlflow.log_params(self._params(config, params, symbol, len(outcomes)))
            with self._progress(len(outcomes)) as progress:
                for outcome in outcomes:
                    name = f"window_{outcome.window.index:02d}"
                    tags = {"ray_node_id": outcome.node_id} if outcome.node_id else None
                    with mlflow.start_run(run_name=name, nested=True, tags=tags):
                        rows.append(self._log_window(outcome, log_model, log_metrics))
                    self._report(progress, rows[-1])
            rows.sort(key=lambda r: r["index"])
            summary = summarize(rows)
            log_metrics({f"{side}_{k}": v for side in summary for k, v in summary[side].items()})
            mlflow.log_dict({"windows": rows, "summary": summary}, "walk_forward.json")
            path = save_figure(plot_walk_forward(rows), "walk_forward.png", self.output_dir)
        return WalkForwardResult(
            rows, summary, parent.info.run_id, time.perf_counter() - began, path
        )

    def _progress(self, total: int):
        """A bar of windows done on stderr; off with show_progress=False or when stderr is not a
        terminal (logs and CI)."""
        from tqdm.auto import tqdm

        enabled = self.show_progress and sys.stderr.isatty()
        return tqdm(total=total, desc="walk-forward windows", unit="window", disable=not enabled)

    @staticmethod
    def _report(progress, row: dict) -> None:
        """Advance the bar and show the window that just finished with its test return."""
        if progress.disable:
            return
        progress.set_postfix_str(
            f"window {row['index']}: test {row['test']['total_return_pct']:+.2f}%", refresh=False
        )
        progress.update(1)
        progress.write(
            f"window {row['index']:>2} test {row['test_start'][:10]}..{row['test_end'][:10]}: "
            f"return {row['test']['total_return_pct']:+.2f}% (buy and hold "
            f"{row['test_benchmark']['total_return_pct']:+.2f}%), {row['seconds']:.1f} s",
            file=sys.stderr,
        )

    def _start(self, candles: pd.DataFrame, windows: list[WalkForwardWindow], args: tuple):
        """Start the windows: as Ray tasks (see RayWindows), the first ones now; else in this
        process, one by one as the result is iterated. Either yields outcomes as windows finish
        and has close() (cancels what is still running)."""
        threads = self.torch_threads or max(1, int(self.num_cpus_per_task))
        if not self.parallel:
            return InProcessWindows(candles, windows, args, threads)
        from training.cluster import ensure_ray

        ensure_ray()  # a local instance, or the cluster named by RAY_ADDRESS
        return RayWindows(
            candles, windows, args, threads, self.num_cpus_per_task, self.num_gpus_per_task
        )

    def _params(self, config: ModelConfig, strategy_params, symbol, n_windows) -> dict:
        """Run parameters, all prefixed `wf_` so they never clash with those `mlflow run`
        logs for the MLproject entry into the same run."""
        safe = {k: v for k, v in strategy_params.items() if isinstance(v, (str, int, float))}
        params = {
            "train_period_days": self.train_period_days,
            "test_period_days": self.test_period_days,
            "step_days": self.step_days,
            "num_windows": n_windows,
            "model_type": model_type_of(config),
            "symbol": symbol,
            "parallel": self.parallel,
            "num_cpus_per_task": self.num_cpus_per_task,
            "num_gpus_per_task": self.num_gpus_per_task,
            "torch_threads": self.torch_threads,
            **{f"engine_{k}": v for k, v in asdict(self.engine).items()},
            **{f"model_{k}": v for k, v in config.to_dict().items()},
            **{f"strategy_{k}": v for k, v in safe.items()},
        }
        return {f"wf_{k}": v for k, v in params.items()}

    @staticmethod
    def _log_window(outcome: WindowOutcome, log_model, log_metrics) -> dict:
        """Log one window as the active nested run; returns its row for the results."""
        import mlflow

        window, train, test = outcome.window, outcome.train, outcome.test
        dates = {
            "train_start": str(window.train_start),
            "train_end": str(window.train_end),
            "test_start": str(window.test_start),
            "test_end": str(window.test_end),
        }
        # the model before the metrics: MLflow 3 copies a run's earlier metrics into each model
        # it logs, reading every metric's history back (a query per metric and window)
        info = log_model(load_bundle(outcome.bundle))
        mlflow.log_params({"window": window.index, **dates})
        log_metrics(
            {
                **{f"train_{k}": v for k, v in train.metrics.items()},
                **{f"test_{k}": v for k, v in test.metrics.items()},
                **{f"test_benchmark_{k}": v for k, v in test.benchmark.items()},
                **{f"model_test_{k}": v for k, v in outcome.model_metrics.items()},
                "seconds": outcome.seconds,
            }
        )
        return {
            "index": window.index,
            **dates,
            "train_bars": len(train.equity_curve),
            "test_bars": len(test.equity_curve),
            "train": train.metrics,
            "test": test.metrics,
            "test_benchmark": test.benchmark,
            "model_metrics": outcome.model_metrics,
            "run_id": mlflow.active_run().info.run_id,
            "model_uri": info.model_uri,
            "seconds": outcome.seconds,
        }
