"""One walk-forward window's work in two steps, and how the windows run: in this process, or as
Ray tasks.

A window first trains its model on its training period (`fit_window`, the long step), then
backtests it in and out of sample (`backtest_window`, a few times shorter). As separate tasks, a
CPU that would wait for the last models to train backtests finished windows meanwhile. The
model reaches the backtest as its saved bundle, in process as well as on Ray, so both give the
same results.

Ray workers import this module to run the steps, so it imports only what a window needs:
no MLflow, no charts.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from backtest.engine import BacktraderEngine
from backtest.results import BacktestResult
from backtest.strategies import forecast_table
from backtest.windows import WalkForwardWindow
from training.bundle import Forecaster
from training.config import ModelConfig
from training.fit import fit_forecaster


@dataclass(frozen=True)
class WindowModel:
    """A window's trained model: what `fit_window` hands to `backtest_window`."""

    window: WalkForwardWindow
    model_metrics: dict[str, float]
    bundle: dict[str, bytes]  # the model bundle's files, name -> bytes
    seconds: float
    node_id: str | None = None  # the Ray node it trained on (None: not in a Ray task)


@dataclass(frozen=True)
class WindowOutcome:
    """A window's model and backtests, for the driver (which alone talks to MLflow)."""

    window: WalkForwardWindow
    train: BacktestResult
    test: BacktestResult
    model_metrics: dict[str, float]
    bundle: dict[str, bytes]  # the model bundle's files, name -> bytes
    seconds: float  # training and backtests
    node_id: str | None = None  # the Ray node the model trained on (None: not in a Ray task)


def bundle_bytes(forecaster: Forecaster) -> dict[str, bytes]:
    """A forecaster's saved bundle as file name -> bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = forecaster.save(Path(tmp))
        return {p.name: p.read_bytes() for p in directory.iterdir()}


def load_bundle(files: dict[str, bytes]) -> Forecaster:
    """The forecaster saved as `bundle_bytes`."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            (Path(tmp) / name).write_bytes(content)
        return Forecaster.load(tmp, device="cpu")


def window_params(
    strategy: type, params: dict, forecaster: Forecaster, train: pd.DataFrame, test: pd.DataFrame
) -> tuple[dict, dict]:
    """Strategy parameters for the in-sample and the out-of-sample backtest of one window.

    A strategy taking `forecast` gets the window's forecasts, made in one batched call over
    train + test (the test bars' windows reach back into the training bars, as `history` does);
    otherwise it gets the `forecaster` (and the training bars as `history` where it takes it).
    """
    keys = strategy.params._getkeys()
    if "forecast" in keys:
        table = forecast_table(forecaster, pd.concat([train, test]))
        return {**params, "forecast": table}, {**params, "forecast": table}
    given = {**params, "forecaster": forecaster}
    return given, {**given, "history": train} if "history" in keys else given


def fit_window(
    candles: pd.DataFrame,
    window: WalkForwardWindow,
    config: ModelConfig,
    symbol: str,
    torch_threads: int | None = None,
) -> WindowModel:
    """Train the window's model on its training period only; touches no MLflow state.
    `candles` were validated once by the analyzer and are not checked again."""
    _set_threads(torch_threads)
    began = time.perf_counter()
    train, _ = window.slices(candles)
    fit = fit_forecaster({symbol: train}, config, show_progress=False)
    return WindowModel(
        window=window,
        model_metrics=dict(fit.metrics),
        bundle=bundle_bytes(fit.forecaster),
        seconds=time.perf_counter() - began,
        node_id=_ray_node_id(),
    )


def backtest_window(
    candles: pd.DataFrame,
    model: WindowModel,
    strategy: type,
    strategy_params: dict,
    engine: BacktraderEngine,
    torch_threads: int | None = None,
) -> WindowOutcome:
    """Backtest a window's model on its training period (in sample) and its test period (out
    of sample)."""
    _set_threads(torch_threads)
    began = time.perf_counter()
    train, test = model.window.slices(candles)
    forecaster = load_bundle(model.bundle)
    in_params, out_params = window_params(strategy, strategy_params, forecaster, train, test)
    return WindowOutcome(
        window=model.window,
        train=engine.run_validated(train, strategy, in_params),
        test=engine.run_validated(test, strategy, out_params),
        model_metrics=model.model_metrics,
        bundle=model.bundle,
        seconds=model.seconds + time.perf_counter() - began,
        node_id=model.node_id,
    )


def run_window(
    candles: pd.DataFrame,
    window: WalkForwardWindow,
    config: ModelConfig,
    strategy: type,
    strategy_params: dict,
    engine: BacktraderEngine,
    symbol: str,
    torch_threads: int | None = None,
) -> WindowOutcome:
    """Both steps of one window, one after the other (the in-process path)."""
    model = fit_window(candles, window, config, symbol, torch_threads)
    return backtest_window(candles, model, strategy, strategy_params, engine, torch_threads)


@contextmanager
def torch_threads_as(count: int) -> Iterator[None]:
    """Torch on `count` threads in this process meanwhile, then as before."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _set_threads(torch_threads: int | None) -> None:
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)  # tasks sharing a node must not oversubscribe


def _ray_node_id() -> str | None:
    """The id of the Ray node this task runs on; None outside a Ray worker."""
    ray = sys.modules.get("ray")  # never imported just to ask
    if ray is None or not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    return context.get_node_id() if context.worker.mode == ray.WORKER_MODE else None


class InProcessWindows:
    """The windows one after another in this process as they are iterated, torch on `threads`
    threads meanwhile."""

    def __init__(self, candles, windows: list[WalkForwardWindow], args: tuple, threads: int):
        self.candles, self.windows, self.args, self.threads = candles, windows, args, threads

    def __len__(self) -> int:
        return len(self.windows)

    def __iter__(self) -> Iterator[WindowOutcome]:
        config, strategy, params, engine, symbol = self.args
        with torch_threads_as(self.threads):
            for window in self.windows:
                yield run_window(
                    self.candles, window, config, strategy, params, engine, symbol, self.threads
                )

    def close(self) -> None:
        """Nothing runs between windows."""


class RayWindows:
    """The windows' steps as Ray tasks, started as the cluster has room; iterating yields the
    windows' outcomes as they finish.

    Candles go to the object store once. At most as many steps run as the cluster's nodes fit
    (counted again as steps finish, so nodes that join are used). The next step is a trained
    window's backtest, so windows finish early and steadily, except while the models left to
    train are not a multiple of the steps that fit at once: then a model starts first, so the
    odd last models train beside backtests instead of alone at the end with CPUs idle.
    """

    def __init__(
        self,
        candles: pd.DataFrame,
        windows: list[WalkForwardWindow],
        args: tuple,
        threads: int,
        num_cpus: float,
        num_gpus: float,
    ) -> None:
        import ray

        self.config, self.strategy, self.params, self.engine, self.symbol = args
        self.threads, self.num_cpus, self.num_gpus = threads, num_cpus, num_gpus
        resources = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_retries": 0}
        self.fit = ray.remote(fit_window).options(name="fit_window", **resources)
        self.backtest = ray.remote(backtest_window).options(name="backtest_window", **resources)
        self.data = ray.put(candles)
        self.total = len(windows)
        self.to_fit = list(windows)
        self.fitted: list = []  # refs of trained models whose backtest has not started
        self.running: dict = {}  # ref -> True for a model being trained, False for a backtest
        self._start_steps()

    def __len__(self) -> int:
        return self.total

    def __iter__(self) -> Iterator[WindowOutcome]:
        import ray

        while self.running:
            (ref,), _ = ray.wait(list(self.running), num_returns=1)
            training = self.running.pop(ref)
            if training:
                ray.get(ref)  # a window that failed to train stops the job here
                self.fitted.append(ref)
            self._start_steps()
            if not training:
                yield ray.get(ref)

    def _start_steps(self) -> None:
        from training.cluster import task_slots

        slots = task_slots(self.num_cpus, self.num_gpus)
        while len(self.running) < slots and (self.to_fit or self.fitted):
            models_first = len(self.to_fit) % slots != 0 or not self.fitted
            if self.to_fit and models_first:
                window = self.to_fit.pop(0)
                ref = self.fit.remote(self.data, window, self.config, self.symbol, self.threads)
                self.running[ref] = True
            else:
                model = self.fitted.pop(0)
                ref = self.backtest.remote(
                    self.data, model, self.strategy, self.params, self.engine, self.threads
                )
                self.running[ref] = False

    def close(self) -> None:
        """Cancel what has not finished: a failed window (or Ctrl-C) stops the rest."""
        import ray

        for ref in self.running:
            ray.cancel(ref)
        self.running, self.to_fit, self.fitted = {}, [], []
