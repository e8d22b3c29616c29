"""Typed settings and results passed between stages, built once at the edge (CLI, MLproject,
Python callers) so library code never reads config dicts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from training.config import ModelConfig
from training.data import SAMPLE, load_data


def as_symbols(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """'BTC/USDT,ETH/USDT' or a sequence -> a tuple of stripped, non-empty symbols."""
    items = value.split(",") if isinstance(value, str) else value
    symbols = tuple(str(s).strip() for s in items if str(s).strip())
    if not symbols:
        raise ValueError("no symbol given: pass at least one, e.g. BTC/USDT")
    return symbols


@dataclass(frozen=True)
class DataSpec:
    """Which candles: symbols (the first is forecast), interval, range and source.

    Attributes:
        source: a CSV/Parquet path, "sample" (the bundled candles) or None (the exchange
            through ccxt).
        days_back: the last N days; None keeps every candle.
    """

    symbols: tuple[str, ...] = ("BTC/USDT",)
    interval: str = "1h"
    days_back: int | None = 365
    source: str | None = SAMPLE
    exchange: str = "binance"

    def __post_init__(self) -> None:
        object.__setattr__(self, "symbols", as_symbols(self.symbols))
        if self.days_back is not None:
            days = int(self.days_back)
            if days < 0 or days != self.days_back:
                raise ValueError(f"days_back must be a whole number >= 0, got {self.days_back}")
            object.__setattr__(self, "days_back", days or None)
        object.__setattr__(self, "source", self.source or None)

    @property
    def symbol(self) -> str:
        """The symbol forecast."""
        return self.symbols[0]

    def load(self) -> dict[str, pd.DataFrame]:
        """Validated candles per symbol, in the spec's order."""
        return {
            s: load_data(s, self.interval, self.days_back, self.source, self.exchange)
            for s in self.symbols
        }


@dataclass(frozen=True)
class TrainSettings:
    """One training run: data, the model's config, where it is recorded and registered."""

    data: DataSpec = field(default_factory=DataSpec)
    config: ModelConfig | None = None  # None: the model type's defaults
    model_type: str = "lstm"
    model_name: str = "lstm_price_forecast"
    experiment_name: str | None = None  # None: "lstm_forecasting", or the `mlflow run` run's
    num_workers: int = 0  # Ray Train workers; 0 trains in this process
    cpus_per_worker: float | None = None  # None: sized from the CPUs free now
    register: bool = True


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    run_id: str
    model_uri: str
    version: str | None
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class TuneSettings:
    """A sweep: data, budget, resources per trial, early stopping and where to record it.

    Attributes:
        fixed: config values every trial uses (e.g. {"patience": 5}); they replace the model's
            search-space entries of the same name.
        search_space: extra or replacement Ray Tune domains (e.g. {"hidden_units":
            tune.choice([16, 32])}), merged over the model's `search_space()`.
        cpus_per_trial: None: an even share of the CPUs free now between concurrent trials.
        gpus_per_trial: None shares the cluster's GPUs between concurrent trials (0 if none).
        scheduler: "asha" stops weak trials early; "fifo" runs every trial to the end.
    """

    data: DataSpec = field(default_factory=DataSpec)
    model_type: str = "lstm"
    model_name: str = "lstm_price_forecast"
    experiment_name: str | None = None  # None: "lstm_tuning", or the `mlflow run` run's
    num_samples: int = 10
    max_concurrent_trials: int = 2
    epochs: int = 20
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    use_optuna: bool = False
    scheduler: str = "asha"
    grace_period: int = 2
    reduction_factor: int = 2
    fixed: Mapping[str, object] = field(default_factory=dict)
    search_space: Mapping[str, object] | None = None
    seed: int = 42
    storage_path: str | None = None
    register: bool = True
    placement_timeout_s: float = 20.0


@dataclass(frozen=True)
class TrialSummary:
    """What one Tune trial did: its config, per-epoch losses and why it ended ("completed",
    "patience", "diverged", "error", or the scheduler's name when it stopped the trial)."""

    trial_id: str | None
    config: Mapping[str, object]
    epochs: int
    best_val_loss: float
    stopped_by: str
    error: str | None
    train_loss: tuple[float, ...]
    val_loss: tuple[float, ...]


@dataclass(frozen=True)
class TuneResult:
    """What a sweep produced: its MLflow runs, the best trial's config, model and test metrics."""

    parent_run_id: str
    best_run_id: str
    best_config: Mapping[str, object]
    best_val_loss: float
    model_uri: str
    version: str | None
    metrics: Mapping[str, float]
    trials: tuple[TrialSummary, ...]
