"""Hyperparameter sweeps with Ray Tune, recorded in MLflow, the best model registered.

mltrade tune --model-type lstm --num-samples 20 --max-concurrent-trials 2 --epochs 20

Trials search the model's `search_space()` (declared in its model file) with the shared trainer
loop, reporting validation loss every epoch (a thin callback), and ASHA stops the weak ones
early; `use_optuna` samples with Optuna instead of at random. Trials never write to MLflow:
this process logs the sweep afterwards from the trial results (see training.tune_log), so a
SQLite store is safe and a tracking server is optional. The best trial (lowest validation
loss) is rebuilt from its checkpoint, finished like any fit, logged like a train run, and
registered.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from training.cluster import check_capacity, cluster_gpus, ensure_ray, free_cpus_per_unit
from training.distributed import DEFAULT_STORAGE
from training.loaders import FitResult, prepare_data
from training.models import build_config, get_model_spec
from training.specs import TrialSummary, TuneResult, TuneSettings
from training.tracking import setup_tracking, start_run
from training.trainer import EpochReport
from training.tune_log import log_sweep, log_sweep_settings, tag_best_version

__all__ = ["build_param_space", "run_sweep", "trial_resources"]

log = logging.getLogger(__name__)
DEFAULT_EXPERIMENT = "lstm_tuning"
WEIGHTS_FILE = "best_weights.pt"
DATA_KEYS = ("input_size", "num_assets")  # decided by the data, never searched


def build_param_space(settings: TuneSettings) -> dict:
    """The model's search space with the sweep's fixed values and extra domains merged in.

    Raises:
        ValueError: unknown model type, or a key the model's config does not have.
    """
    spec = get_model_spec(settings.model_type)
    given = {**settings.fixed, **(settings.search_space or {})}
    # old names (e.g. --param hidden_size=16) replace the entries of the fields they mean
    space = spec.search_space() | {spec.config_class.canonical_name(k): v for k, v in given.items()}
    space["epochs"] = settings.epochs
    space.setdefault("seed", settings.seed)
    known = spec.config_class.field_names() - set(DATA_KEYS)
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
    for name, low in (least | {"reduction_factor": 2}).items():
        if getattr(settings, name) < low:
            raise ValueError(f"{name} must be >= {low:g}, got {getattr(settings, name)}")
    if settings.cpus_per_trial is not None and settings.cpus_per_trial <= 0:
        raise ValueError(f"cpus_per_trial must be > 0, got {settings.cpus_per_trial}")
    if settings.scheduler not in ("asha", "fifo"):
        raise ValueError(f"scheduler must be 'asha' or 'fifo', got {settings.scheduler!r}")
    symbols = settings.data.symbols
    if get_model_spec(settings.model_type).multi_asset != (len(symbols) > 1):
        raise ValueError(
            f"{settings.model_type} cannot forecast from symbols {list(symbols)}: "
            "cnn_lstm takes two or more, the other models exactly one"
        )


def run_trial(values: dict, frames: dict, model_type: str, threads: int) -> None:
    """One Tune trial: the shared trainer loop, reporting every epoch and checkpointing the
    weights whenever validation loss improves."""
    from ray import tune

    torch.set_num_threads(max(1, threads))
    config = build_config(model_type, values, num_assets=len(frames))
    data = prepare_data(frames, config)
    trainer = get_model_spec(model_type).trainer_class(config, show_progress=False)

    def report(epoch: EpochReport) -> None:
        if not epoch.improved:
            tune.report(epoch.metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(epoch.stopping.best_state, Path(tmp) / WEIGHTS_FILE)
            tune.report(epoch.metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    trainer.train(*data.batches(), report)


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
    cpus = settings.cpus_per_trial or free_cpus_per_unit(settings.max_concurrent_trials)
    per_trial = {"CPU": float(cpus), **({"GPU": gpus} if gpus else {})}
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


def trial_summary(result, settings: TuneSettings) -> TrialSummary:
    """What a trial did: its config, per-epoch losses and why it ended."""
    frame = result.metrics_dataframe if result.metrics_dataframe is not None else pd.DataFrame()
    epochs = len(frame)
    config = build_config(settings.model_type, result.config, len(settings.data.symbols))
    if result.error is not None:
        stopped_by = "error"
    elif epochs >= settings.epochs:
        stopped_by = "completed"
    elif epochs and not np.isfinite(frame["val_loss"].iloc[-1]):
        stopped_by = "diverged"
    elif epochs and frame["epochs_since_best"].iloc[-1] >= config.patience:
        stopped_by = "patience"
    else:
        stopped_by = settings.scheduler  # the scheduler ended it before its last epoch
    metrics: Mapping = result.metrics or {}
    return TrialSummary(
        trial_id=metrics["trial_id"] if "trial_id" in metrics else None,
        config=dict(result.config),
        epochs=epochs,
        best_val_loss=float(frame["val_loss"].min()) if epochs else math.nan,
        stopped_by=stopped_by,
        error=None if result.error is None else str(result.error),
        train_loss=tuple(frame["train_loss"].tolist()) if epochs else (),
        val_loss=tuple(frame["val_loss"].tolist()) if epochs else (),
    )


def rebuild_best(settings: TuneSettings, frames: dict, result, summary: TrialSummary) -> FitResult:
    """The best trial's forecaster from its checkpoint, finished like any fit."""
    config = build_config(settings.model_type, result.config, len(frames))
    data = prepare_data(frames, config)
    trainer = get_model_spec(settings.model_type).trainer_class(config, show_progress=False)
    with result.checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    trainer.model.load_state_dict(state)
    history = {
        "train_loss": list(summary.train_loss),
        "val_loss": list(summary.val_loss),
        "best_epoch": [int(np.argmin(summary.val_loss))],
    }
    return data.fit_result(trainer, history)


def run_sweep(settings: TuneSettings) -> TuneResult:
    """Check, sweep, log to MLflow and register the best trial's model.

    Under `mlflow run` the launcher's run is the sweep's parent run; otherwise the parent goes
    to `settings.experiment_name` (default "lstm_tuning").

    Raises:
        ValueError: settings that cannot make a sweep (before any work starts).
        ClusterCapacityError: the cluster cannot place one trial.
        RuntimeError: every trial failed or diverged.
    """
    check_settings(settings)
    space = build_param_space(settings)
    setup_tracking()  # an unreachable tracking server fails here, before any training
    frames = settings.data.load()
    ensure_ray()
    resources, concurrent = trial_resources(settings)
    experiment = settings.experiment_name or DEFAULT_EXPERIMENT
    with start_run(experiment, run_name=f"tune_{settings.model_type}") as parent:
        log_sweep_settings(settings, space)
        results = run_tuner(settings, frames, space, resources, concurrent)
        summaries = [trial_summary(r, settings) for r in results]
        usable = [
            i
            for i, s in enumerate(summaries)
            if np.isfinite(s.best_val_loss) and results[i].checkpoint is not None
        ]
        if not usable:
            errors = [s.error for s in summaries if s.error]
            raise RuntimeError(
                f"all {len(summaries)} trials failed or diverged; first error: "
                f"{errors[0] if errors else 'none (every validation loss was NaN/inf)'}"
            )
        best_index = min(usable, key=lambda i: summaries[i].best_val_loss)
        best = rebuild_best(settings, frames, results[best_index], summaries[best_index])
        version, best_run_id = log_sweep(settings, summaries, best_index, best)
    best_summary = summaries[best_index]
    if version is not None:
        tag_best_version(settings.model_name, version, best_summary)
    ends = pd.Series([s.stopped_by for s in summaries]).value_counts().to_dict()
    log.info(
        "sweep %s: trials %s, best val_loss %.5f",
        parent.info.run_id,
        ends,
        best_summary.best_val_loss,
    )
    return TuneResult(
        parent_run_id=parent.info.run_id,
        best_run_id=best_run_id,
        best_config=best_summary.config,
        best_val_loss=best_summary.best_val_loss,
        model_uri=f"runs:/{best_run_id}/model",
        version=version,
        metrics=dict(best.metrics),
        trials=tuple(summaries),
    )


if __name__ == "__main__":  # `python -m training.tune`: the same command as `mltrade tune`
    from mltrade.cli import run_command

    raise SystemExit(run_command(["tune"], None, "python -m training.tune"))
