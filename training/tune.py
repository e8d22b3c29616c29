"""Hyperparameter sweeps with Ray Tune, recorded in MLflow, the best model registered.

python -m training.tune --model-type lstm --num-samples 20 --max-concurrent-trials 2 --epochs 20

Trials search the model's `search_space()` (declared in its model file), report validation loss
every epoch, and ASHA stops the weak ones early; `--use-optuna` samples with Optuna instead of
at random. Trials never write to MLflow: this process logs the sweep afterwards from the trial
results (a parent run with one nested run per trial), so a SQLite store is safe and a tracking
server is optional. The best trial (lowest validation loss) is rebuilt from its checkpoint,
calibrated, tested, logged like `training.train` logs a run, and registered.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from training.data import SAMPLE, load_data
from training.distributed import (
    DEFAULT_STORAGE,
    ClusterCapacityError,
    check_capacity,
    cluster_gpus,
    ensure_ray,
)
from training.fit import FitResult, data_metadata, finish_forecaster, prepare_splits
from training.models import MODEL_TYPES, get_model_spec
from training.tracking import setup_tracking, use_experiment
from training.train import TrainSettings, log_fit, log_forecaster, parse_overrides
from training.trainer import EarlyStopping, TensorBatches

__all__ = ["TuneSettings", "build_param_space", "main", "run_sweep"]

log = logging.getLogger(__name__)
WEIGHTS_FILE = "best_weights.pt"
DATA_KEYS = ("input_size", "num_assets")  # decided by the data, never searched


@dataclass(frozen=True)
class TuneSettings:
    """A sweep: data, budget, resources per trial, early stopping and where to record it.

    Attributes:
        fixed: config values every trial uses (e.g. {"patience": 5}); they replace the model's
            search-space entries of the same name.
        search_space: extra or replacement Ray Tune domains (e.g. {"hidden_size":
            tune.choice([16, 32])}), merged over the model's `search_space()`.
        gpus_per_trial: None shares the cluster's GPUs between concurrent trials (0 if none).
        scheduler: "asha" stops weak trials early; "fifo" runs every trial to the end.
    """

    model_type: str = "lstm"
    model_name: str = "lstm_price_forecast"
    symbols: tuple[str, ...] = ("BTC/USDT",)
    interval: str = "1h"
    days_back: int | None = 365
    data_path: str | None = SAMPLE
    exchange: str = "binance"
    experiment_name: str = "lstm_tuning"
    num_samples: int = 10
    max_concurrent_trials: int = 2
    epochs: int = 20
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None
    use_optuna: bool = False
    scheduler: str = "asha"
    grace_period: int = 2
    reduction_factor: int = 2
    fixed: dict = field(default_factory=dict)
    search_space: dict | None = None
    seed: int = 42
    storage_path: str | None = None
    register: bool = True
    placement_timeout_s: float = 20.0


def build_param_space(settings: TuneSettings) -> dict:
    """The model's search space with the sweep's fixed values and extra domains merged in.

    Raises:
        ValueError: unknown model type, or a key the model's config does not have.
    """
    spec = get_model_spec(settings.model_type)
    space = {**spec.search_space(), **settings.fixed, **(settings.search_space or {})}
    space["epochs"] = settings.epochs
    space.setdefault("seed", settings.seed)
    known = {f.name for f in fields(spec.config_class)} - set(DATA_KEYS)
    unknown = sorted(set(space) - known)
    if unknown:
        raise ValueError(
            f"unknown search-space key(s) {unknown} for model type {settings.model_type!r}; "
            f"known keys: {sorted(known)}"
        )
    return space


def check_settings(settings: TuneSettings) -> None:
    """Reject budgets and resources that cannot make a sweep, before any work starts."""
    least = {"num_samples": 1, "max_concurrent_trials": 1, "epochs": 1, "grace_period": 1}
    for name, low in (least | {"reduction_factor": 2, "cpus_per_trial": 1e-3}).items():
        if getattr(settings, name) < low:
            raise ValueError(f"{name} must be >= {low:g}, got {getattr(settings, name)}")
    if settings.scheduler not in ("asha", "fifo"):
        raise ValueError(f"scheduler must be 'asha' or 'fifo', got {settings.scheduler!r}")
    if get_model_spec(settings.model_type).multi_asset != (len(settings.symbols) > 1):
        raise ValueError(
            f"{settings.model_type} cannot forecast from symbols {list(settings.symbols)}: "
            "cnn_lstm takes two or more, the other models exactly one"
        )


def run_trial(config: dict, frames: dict, model_type: str, threads: int) -> None:
    """One Tune trial: the shared trainer's epochs, reporting validation loss every epoch and
    checkpointing the weights whenever it improves; stops on the config's patience."""
    from ray import tune

    torch.set_num_threads(max(1, threads))
    model_config, _, data = prepare_splits(frames, model_type, config)
    trainer = get_model_spec(model_type).trainer_class(model_config, show_progress=False)
    train = TensorBatches(
        data["train"].x, data["train"].y, model_config.batch_size, True, model_config.seed
    )
    val = TensorBatches(data["val"].x, data["val"].y, 1024)
    stopping = EarlyStopping()
    for epoch in range(model_config.epochs):
        train_loss = trainer.train_epoch(train)
        val_loss = trainer.evaluate(val)
        improved = stopping.update(train_loss, val_loss, trainer.model)
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "best_val_loss": stopping.best_loss,
            "epochs_since_best": stopping.stale,
        }
        if improved:
            with tempfile.TemporaryDirectory() as tmp:
                torch.save(stopping.best_state, Path(tmp) / WEIGHTS_FILE)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
        else:
            tune.report(metrics)
        if stopping.should_stop(model_config.patience) or not math.isfinite(val_loss):
            break


def trial_resources(settings: TuneSettings) -> tuple[dict, int]:
    """Resources per trial and the concurrency the cluster can actually hold.

    Raises:
        ClusterCapacityError: not even one trial fits, or none frees up in time.
    """
    import ray

    gpus = settings.gpus_per_trial
    if gpus is None:
        have = cluster_gpus()
        gpus = min(1.0, have / settings.max_concurrent_trials) if have else 0.0
    per_trial = {"CPU": float(settings.cpus_per_trial), **({"GPU": gpus} if gpus else {})}
    check_capacity(1, per_trial, "trials", settings.placement_timeout_s)
    total = ray.cluster_resources()
    fits = min(math.floor(total.get(k, 0.0) / v + 1e-9) for k, v in per_trial.items())
    concurrent = max(1, min(settings.max_concurrent_trials, fits))
    if concurrent < settings.max_concurrent_trials:
        log.warning("max_concurrent_trials capped to %d: trials of %s fit", concurrent, per_trial)
    return {k.lower(): v for k, v in per_trial.items()}, concurrent


def run_tuner(settings: TuneSettings, frames: dict, space: dict, resources: dict, concurrent: int):
    """Run the trials on Ray Tune and return the ResultGrid."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # a forced experiment snapshot per checkpoint is cheap on local storage; Tune warns anyway
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if settings.use_optuna:
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(seed=settings.seed)
    else:
        search_alg = BasicVariantGenerator(random_state=settings.seed)
    if settings.scheduler == "asha":
        scheduler = ASHAScheduler(
            max_t=settings.epochs,
            grace_period=min(settings.grace_period, settings.epochs),
            reduction_factor=settings.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    trainable = tune.with_parameters(
        run_trial,
        frames=frames,
        model_type=settings.model_type,
        threads=int(resources["cpu"]),
    )
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="val_loss",
            mode="min",
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=settings.num_samples,
            max_concurrent_trials=concurrent,
            reuse_actors=True,  # no new process (and torch import) per trial
        ),
        run_config=tune.RunConfig(
            name=f"tune_{settings.model_type}_{datetime.now(UTC):%Y%m%d_%H%M%S_%f}",
            storage_path=str(Path(settings.storage_path or DEFAULT_STORAGE).resolve()),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=1,
        ),
    )
    return tuner.fit()


def trial_summary(result, settings: TuneSettings) -> dict:
    """What a trial did: its config, per-epoch losses and why it ended."""
    frame = result.metrics_dataframe if result.metrics_dataframe is not None else pd.DataFrame()
    epochs = len(frame)
    default_patience = get_model_spec(settings.model_type).config_class.patience
    patience = int(result.config.get("patience", default_patience))
    if result.error is not None:
        stopped_by = "error"
    elif epochs >= settings.epochs:
        stopped_by = "completed"
    elif epochs and not np.isfinite(frame["val_loss"].iloc[-1]):
        stopped_by = "diverged"
    elif epochs and frame["epochs_since_best"].iloc[-1] >= patience:
        stopped_by = "patience"
    else:
        stopped_by = settings.scheduler  # the scheduler ended it before its last epoch
    best = float(frame["val_loss"].min()) if epochs else math.nan
    return {
        "trial_id": result.metrics.get("trial_id") if result.metrics else None,
        "config": dict(result.config),
        "history": frame,
        "epochs": epochs,
        "best_val_loss": best,
        "stopped_by": stopped_by,
        "error": None if result.error is None else str(result.error),
    }


def rebuild_best(settings: TuneSettings, frames: dict, result) -> FitResult:
    """The best trial's forecaster from its checkpoint, calibrated and tested like any fit."""
    spec = get_model_spec(settings.model_type)
    config, pipeline, data = prepare_splits(frames, settings.model_type, result.config)
    trainer = spec.trainer_class(config, show_progress=False)
    with result.checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    trainer.model.load_state_dict(state)
    forecaster, metrics, forecast = finish_forecaster(
        settings.model_type, config, pipeline, trainer, data
    )
    splits = {name: d.split for name, d in data.items()}
    frame = result.metrics_dataframe
    history = {
        "train_loss": frame["train_loss"].tolist(),
        "val_loss": frame["val_loss"].tolist(),
        "best_epoch": [int(frame["val_loss"].to_numpy().argmin())],
    }
    forecaster.metadata.update(data_metadata(frames, splits), test_metrics=metrics)
    return FitResult(forecaster, history, metrics, splits, forecast)


def log_trial_epochs(run_id: str, history: pd.DataFrame) -> None:
    """Per-epoch losses of a trial into its nested run, in batches."""
    now = int(datetime.now(UTC).timestamp() * 1000)
    metrics = [
        Metric(key, float(value), now, step)
        for key in ("train_loss", "val_loss")
        for step, value in enumerate(history[key])
    ]
    for start in range(0, len(metrics), 1000):  # MLflow caps a batch at 1000 metrics
        MlflowClient().log_batch(run_id, metrics=metrics[start : start + 1000])


def log_sweep(settings: TuneSettings, summaries: list[dict], best_index: int, best: FitResult):
    """One nested run per trial under the active parent run; the best one gets the model."""
    shared = {f.name for f in fields(TrainSettings)} & {f.name for f in fields(TuneSettings)}
    train_settings = TrainSettings(**{name: getattr(settings, name) for name in shared})
    info, best_run_id = None, None
    for index, trial in enumerate(summaries):
        with mlflow.start_run(run_name=f"trial_{index:03d}", nested=True) as run:
            mlflow.set_tags(
                {"trial_id": trial["trial_id"], "stopped_by": trial["stopped_by"]}
                | ({"error": trial["error"][:5000]} if trial["error"] else {})
            )
            if len(trial["history"]):
                log_trial_epochs(run.info.run_id, trial["history"])
                mlflow.log_metrics(
                    {"best_val_loss": trial["best_val_loss"], "epochs_run": trial["epochs"]}
                )
            if index == best_index:
                log_fit(best, train_settings)  # the same params, metrics and plots as a train run
                info = log_forecaster(
                    best.forecaster, settings.model_name if settings.register else None
                )
                best_run_id = run.info.run_id
            else:
                mlflow.log_params(trial["config"])
    return info, best_run_id


def run_sweep(settings: TuneSettings) -> dict:
    """Check, sweep, log to MLflow and register the best trial's model.

    Returns:
        parent_run_id, best_run_id, best_config, best_val_loss, model_uri, version, metrics
        (test metrics of the best model) and trials (one summary per trial).
    """
    check_settings(settings)
    space = build_param_space(settings)
    setup_tracking()  # an unreachable tracking server fails here, before any training
    frames = {
        s: load_data(
            s, settings.interval, settings.days_back, settings.data_path, settings.exchange
        )
        for s in settings.symbols
    }
    if not os.environ.get("MLFLOW_RUN_ID"):  # under `mlflow run`, the project run is the parent
        use_experiment(settings.experiment_name)
    ensure_ray()
    resources, concurrent = trial_resources(settings)
    with mlflow.start_run(run_name=f"tune_{settings.model_type}") as parent:
        # prefixed: under `mlflow run` the parent already holds the entry point's raw params
        skip = ("fixed", "search_space")
        mlflow.log_params({f"sweep.{k}": v for k, v in asdict(settings).items() if k not in skip})
        mlflow.log_dict({k: str(v) for k, v in space.items()}, "search_space.json")
        results = run_tuner(settings, frames, space, resources, concurrent)
        summaries = [trial_summary(r, settings) for r in results]
        usable = [
            i
            for i, s in enumerate(summaries)
            if np.isfinite(s["best_val_loss"]) and results[i].checkpoint is not None
        ]
        if not usable:
            errors = [s["error"] for s in summaries if s["error"]]
            raise RuntimeError(
                f"all {len(summaries)} trials failed or diverged; first error: "
                f"{errors[0] if errors else 'none (every validation loss was NaN/inf)'}"
            )
        best_index = min(usable, key=lambda i: summaries[i]["best_val_loss"])
        best = rebuild_best(settings, frames, results[best_index])
        info, best_run_id = log_sweep(settings, summaries, best_index, best)
        best_summary = summaries[best_index]
        mlflow.log_metrics(
            {"best_val_loss": best_summary["best_val_loss"]}
            | {f"best_test_{k}": v for k, v in best.metrics.items()}
        )
        mlflow.set_tags({"best_run_id": best_run_id, "best_trial_id": best_summary["trial_id"]})
        mlflow.log_dict(best_summary["config"], "best_config.json")
    version = None if info.registered_model_version is None else str(info.registered_model_version)
    if version is not None:  # the winning hyperparameters, on the registered version itself
        tags = {f"param.{k}": v for k, v in best_summary["config"].items()}
        tags["tune.best_val_loss"] = f"{best_summary['best_val_loss']:.6g}"
        for key, value in tags.items():
            MlflowClient().set_model_version_tag(settings.model_name, version, key, str(value))
    ends = pd.Series([s["stopped_by"] for s in summaries]).value_counts().to_dict()
    log.info(
        "sweep %s: trials %s, best val_loss %.5f",
        parent.info.run_id,
        ends,
        best_summary["best_val_loss"],
    )
    return {
        "parent_run_id": parent.info.run_id,
        "best_run_id": best_run_id,
        "best_config": best_summary["config"],
        "best_val_loss": best_summary["best_val_loss"],
        "model_uri": f"runs:/{best_run_id}/model",
        "version": version,
        "metrics": best.metrics,
        "trials": [{k: v for k, v in s.items() if k != "history"} for s in summaries],
    }


def _bool(text: str) -> bool:
    words = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    if str(text).strip().lower() not in words:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return words[str(text).strip().lower()]


def _int(text: str) -> int:
    """MLproject passes numbers as floats ('20.0'); accept whole numbers either way."""
    value = float(text)
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.tune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model-type", default="lstm", choices=sorted(MODEL_TYPES))
    p.add_argument("--symbols", default="", help="comma-separated (cnn_lstm), forecast one first")
    p.add_argument("--use-optuna", type=_bool, nargs="?", const=True, default=False)
    p.add_argument("--scheduler", choices=("asha", "fifo"), default="asha")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fix a config value for every trial, e.g. --param patience=5",
    )
    p.add_argument("--no-register", action="store_true", help="log the best model unregistered")
    for flag, kind, default, text in (
        ("--model-name", str, "lstm_price_forecast", "registered model name"),
        ("--symbol", str, "BTC/USDT", "the symbol to forecast"),
        ("--data-path", str, SAMPLE, "file, 'sample' or '' (live via ccxt)"),
        ("--interval", str, "1h", "candle interval"),
        ("--days-back", _int, 365, "days of candles; 0 keeps all"),
        ("--exchange", str, "binance", "ccxt exchange id for live data"),
        ("--experiment-name", str, "lstm_tuning", "ignored under `mlflow run`"),
        ("--num-samples", _int, 10, "trials to run"),
        ("--max-concurrent-trials", _int, 2, "capped to what the cluster holds"),
        ("--epochs", _int, 20, "most epochs per trial (ASHA max_t)"),
        ("--cpus-per-trial", float, 1.0, "CPUs (and torch threads) per trial"),
        ("--gpus-per-trial", float, None, "default: share the cluster's GPUs, if any"),
        ("--grace-period", _int, 2, "ASHA: epochs a trial runs before it can be stopped"),
        ("--reduction-factor", _int, 2, "ASHA: keep the best 1/factor at each rung"),
        ("--seed", _int, 42, "seed of the sampler and of every trial"),
        ("--storage-path", str, None, "Ray Tune results (default ray_results/)"),
    ):
        p.add_argument(flag, type=kind, default=default, help=text)
    return p


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point (also the MLproject `tune` entry)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = vars(build_parser().parse_args(argv))
    # MLproject renders an empty string parameter as ''; treat stray quotes as nothing
    names = [s.strip().strip("'\"") for s in args.pop("symbols").split(",")]
    symbol = args.pop("symbol")
    args.update(
        symbols=tuple(n for n in names if n) or (symbol,),
        days_back=args["days_back"] or None,
        data_path=args["data_path"] or None,
        fixed=parse_overrides(args.pop("param")),
        register=not args.pop("no_register"),
    )
    settings = TuneSettings(**args)
    try:
        result = run_sweep(settings)
    except (ValueError, ClusterCapacityError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    print(
        f"parent_run_id={result['parent_run_id']} best_run_id={result['best_run_id']} "
        f"registered={settings.model_name} version={result['version']} "
        f"best_val_loss={result['best_val_loss']:.6g}"
    )
    print(f"  best config: {result['best_config']}")
    return result


if __name__ == "__main__":
    main()
