"""Data-parallel training on a Ray cluster with Ray Train's TorchTrainer.

The driver prepares the splits and fits the feature pipeline (train split only) exactly as
`training.fit` does; each worker runs the shared trainer's `train_epoch` / `evaluate` on its shard
of the training data with the model wrapped in DDP, reports losses each epoch with a checkpoint,
and resumes from the latest checkpoint after a failure. The driver then logs the per-epoch
metrics to the active MLflow run (workers never touch MLflow), rebuilds the best model from the
final checkpoint and calibrates and scores it with `training.fit.finish_forecaster`.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pandas as pd
import torch

from training.data import PROJECT_ROOT
from training.fit import FitResult, data_metadata, finish_forecaster, prepare_splits
from training.models import get_model_spec
from training.trainer import BaseTrainer, EarlyStopping, TensorBatches

log = logging.getLogger(__name__)

DEFAULT_STORAGE = PROJECT_ROOT / "ray_results"
STATE_FILE = "train_state.pt"


class ClusterCapacityError(RuntimeError):
    """Raised when the Ray cluster cannot place the requested workers or trials."""


@dataclass(frozen=True)
class DistributedSettings:
    """How Ray Train runs the workers.

    Attributes:
        cpus_per_worker: CPUs reserved (and torch threads used) per worker; None splits the
            cluster's CPUs evenly between the workers.
        max_failures: worker-group restarts allowed; each resumes from the latest checkpoint.
        storage_path: where Ray Train keeps checkpoints (must be shared storage on a multi-node
            cluster); the run directory is deleted after a successful run.
        placement_timeout_s: how long to wait for busy CPUs/GPUs to free before giving up.
        fail_at_epoch: testing aid: rank 0 raises once at this epoch, to exercise recovery.
    """

    cpus_per_worker: float | None = None
    max_failures: int = 2
    storage_path: str | None = None
    placement_timeout_s: float = 20.0
    fail_at_epoch: int | None = None


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DistributedDataParallel wrapper (or the module itself)."""
    return getattr(model, "module", model)


def cluster_gpus() -> float:
    """GPUs the connected Ray cluster reports (0 on a CPU-only cluster)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


def ensure_ray() -> None:
    """Connect to Ray if this process is not connected yet: RAY_ADDRESS (as set inside a Ray
    job), else a cluster started with `ray start` on this machine, else a new local instance."""
    import ray

    if not ray.is_initialized():
        ray.init(logging_level=logging.WARNING)


def check_capacity(count: int, per_unit: dict[str, float], what: str, timeout_s: float) -> None:
    """Fail fast when `count` units of `per_unit` resources can never be placed, and wait at most
    `timeout_s` for busy resources to free up; never leave the caller waiting forever.

    Raises:
        ClusterCapacityError: with what was asked, what the cluster has, and what to change.
    """
    import ray

    total = ray.cluster_resources()
    largest_node = {
        key: max((n["Resources"].get(key, 0.0) for n in ray.nodes() if n["Alive"]), default=0.0)
        for key in per_unit
    }
    for key, amount in per_unit.items():
        need = amount * count
        if need > total.get(key, 0.0) + 1e-9 or amount > largest_node[key] + 1e-9:
            raise ClusterCapacityError(
                f"{count} {what} x {amount:g} {key} need {need:g} {key}, but the Ray cluster has "
                f"{total.get(key, 0.0):g} {key} (at most {largest_node[key]:g} on one node); "
                f"ask for fewer {what} or fewer {key} each, or add nodes"
            )
    deadline = time.monotonic() + timeout_s
    while True:
        free = ray.available_resources()
        short = {k: a * count for k, a in per_unit.items() if a * count > free.get(k, 0.0) + 1e-9}
        if not short:
            return
        if time.monotonic() > deadline:
            raise ClusterCapacityError(
                f"{count} {what} need {short} but only "
                f"{ {k: free.get(k, 0.0) for k in short} } are free after waiting "
                f"{timeout_s:g}s; other Ray work holds the rest"
            )
        time.sleep(0.5)


def _all_reduce(values: list[float], device: torch.device, op: str = "SUM") -> list[float]:
    """Reduce across workers with torch.distributed (SUM or MAX); a no-op on one worker."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)  # NCCL reduces GPU tensors only
    torch.distributed.all_reduce(t, op=getattr(torch.distributed.ReduceOp, op))
    return t.tolist()


def _evaluate_local(trainer: BaseTrainer, batches: TensorBatches) -> float:
    """Validation loss with the plain module: a DDP forward may broadcast buffers (a collective)
    and the validation shards differ in length."""
    wrapped = trainer.model
    trainer.model = unwrap(wrapped)
    try:
        return trainer.evaluate(batches)
    finally:
        trainer.model = wrapped


def _load_checkpoint(checkpoint) -> dict:
    with checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train worker: resume if a checkpoint exists, train the shard, report every epoch."""
    import ray
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(loop_config["threads"])))
    spec = get_model_spec(loop_config["model_type"])
    config = spec.config_class.from_dict(loop_config["config"])
    x_train, y_train, x_val, y_val = ray.get(loop_config["data"])
    per_rank = len(x_train) // world  # equal shards: DDP needs the same step count on every rank
    # copies: arrays from the object store are read-only views
    x_shard, y_shard = (
        x_train[rank::world][:per_rank].copy(),
        y_train[rank::world][:per_rank].copy(),
    )
    batch_size = max(1, config.batch_size // world)  # keeps the global batch of the config
    val = TensorBatches(x_val[rank::world].copy(), y_val[rank::world].copy(), 1024)

    device = ray.train.torch.get_device()
    trainer = spec.trainer_class(config, device=str(device), show_progress=False)
    stopping, epoch_log = EarlyStopping(), []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        state = _load_checkpoint(checkpoint)
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        stopping, epoch_log = EarlyStopping.from_dict(state["stopping"]), state["epoch_log"]
        # every rank draws the same dropout masks in the same order, so rank 0's RNG fits all
        torch.set_rng_state(state["rng"])
    resumed = checkpoint is not None
    trainer.model = ray.train.torch.prepare_model(trainer.model)

    for epoch in range(stopping.next_epoch, config.epochs):
        if loop_config.get("fail_at_epoch") == epoch and not resumed and rank == 0:
            raise RuntimeError(f"injected worker failure at epoch {epoch} (fail_at_epoch)")
        seed = config.seed + epoch * world + rank  # a fresh order per epoch, reproducible
        shard = TensorBatches(x_shard, y_shard, batch_size, True, seed)
        start = time.perf_counter()
        train_loss = trainer.train_epoch(shard)
        seconds = time.perf_counter() - start
        val_loss = _evaluate_local(trainer, val)
        t_sum, t_n, v_sum, v_n = _all_reduce(
            [train_loss * per_rank, per_rank, val_loss * len(val.y), len(val.y)], device
        )
        (epoch_s,) = _all_reduce([seconds], device, "MAX")  # the slowest worker sets the pace
        stopping.update(t_sum / t_n, v_sum / v_n, unwrap(trainer.model))
        epoch_log.append({"samples_per_s": t_n / max(epoch_s, 1e-9), "resumed": int(resumed)})
        metrics = {
            "epoch": epoch,
            "train_loss": t_sum / t_n,
            "val_loss": v_sum / v_n,
            "best_val_loss": stopping.best_loss,
            "train_samples_per_s": epoch_log[-1]["samples_per_s"],
        }
        if rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                torch.save(
                    {
                        "model": unwrap(trainer.model).state_dict(),
                        "optimizer": trainer.optimizer.state_dict(),
                        "stopping": stopping.to_dict(),
                        "epoch_log": epoch_log,
                        "rng": torch.get_rng_state(),
                    },
                    Path(tmp) / STATE_FILE,
                )
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)
        if stopping.should_stop(config.patience):
            break


def _log_epochs(history: dict[str, list[float]], epoch_log: list[dict]) -> None:
    """Per-epoch metrics into the active MLflow run, as in-process training logs them."""
    if not mlflow.active_run():
        return
    for epoch, (train_loss, val_loss, extra) in enumerate(
        zip(history["train_loss"], history["val_loss"], epoch_log, strict=True)
    ):
        values = {"train_loss": train_loss, "val_loss": val_loss}
        mlflow.log_metrics(values | {"train_samples_per_s": extra["samples_per_s"]}, step=epoch)


def run_torch_trainer(
    model_type: str,
    config,
    data: dict,
    num_workers: int,
    settings: DistributedSettings,
):
    """Run the workers; returns the final checkpoint's state and the run's facts."""
    import ray
    from ray.train import (
        CheckpointConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchTrainer

    use_gpu = cluster_gpus() >= 1
    cpus = settings.cpus_per_worker
    if cpus is None:
        cpus = max(1.0, math.floor(ray.cluster_resources().get("CPU", 1) / num_workers))
    per_worker = {"CPU": float(cpus), **({"GPU": 1.0} if use_gpu else {})}
    check_capacity(num_workers, per_worker, "workers", settings.placement_timeout_s)
    arrays = (data["train"].x, data["train"].y, data["val"].x, data["val"].y)
    storage = Path(settings.storage_path or DEFAULT_STORAGE).resolve()
    name = f"train_{model_type}_{datetime.now(UTC):%Y%m%d_%H%M%S_%f}"
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "model_type": model_type,
            "config": config.to_dict(),
            "data": ray.put(arrays),
            "threads": cpus,
            "fail_at_epoch": settings.fail_at_epoch,
        },
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            logging_config=LoggingConfig(log_level="WARNING"),  # not a line per report
        ),
    )
    start = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - start
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {name} finished without a checkpoint")
    state = _load_checkpoint(result.checkpoint)
    shutil.rmtree(storage / name, ignore_errors=True)  # checkpoints were only for recovery
    epoch_log = state["epoch_log"]
    facts = {
        "num_workers": num_workers,
        "cpus_per_worker": float(cpus),
        "use_gpu": use_gpu,
        "seconds": seconds,
        "epochs": len(epoch_log),
        "epoch_samples_per_s": [round(e["samples_per_s"], 1) for e in epoch_log],
        "resumed_from_epoch": next((i for i, e in enumerate(epoch_log) if e["resumed"]), None),
    }
    return state, facts


def fit_forecaster_distributed(
    frames: dict[str, pd.DataFrame],
    model_type: str = "lstm",
    overrides: dict | None = None,
    num_workers: int = 2,
    settings: DistributedSettings | None = None,
) -> FitResult:
    """Train on `num_workers` Ray Train workers and finish like `training.fit.fit_forecaster`.

    Connects to Ray if needed (see `ensure_ray`). Per-epoch losses and throughput go to the
    active MLflow run, if any, from this process.

    Args:
        frames: validated candles per symbol; the first symbol is forecast.
        model_type: a key of training.models.MODEL_TYPES.
        overrides: config values (e.g. {"epochs": 20, "hidden_size": 32}).
        num_workers: data-parallel workers (>= 1); GPUs are used when the cluster has them.
        settings: resources, failure handling and checkpoint storage.

    Raises:
        ClusterCapacityError: the cluster cannot place the workers (raised within seconds).
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1 for Ray Train, got {num_workers}")
    settings = settings or DistributedSettings()
    config, pipeline, data = prepare_splits(frames, model_type, overrides or {})
    ensure_ray()
    state, facts = run_torch_trainer(model_type, config, data, num_workers, settings)
    stopping = EarlyStopping.from_dict(state["stopping"])
    history = stopping.history()
    _log_epochs(history, state["epoch_log"])

    trainer = get_model_spec(model_type).trainer_class(config, show_progress=False)
    trainer.model.load_state_dict(stopping.best_state)
    forecaster, metrics, forecast = finish_forecaster(model_type, config, pipeline, trainer, data)
    splits = {name: d.split for name, d in data.items()}
    forecaster.metadata.update(
        data_metadata(frames, splits),
        test_metrics=metrics,
        ray_train=facts,
    )
    log.info(
        "Ray Train: %d workers, %d epochs in %.1fs, best epoch %d (val %.5f)",
        num_workers,
        len(history["val_loss"]),
        facts["seconds"],
        stopping.best_epoch,
        stopping.best_loss,
    )
    return FitResult(forecaster, history, metrics, splits, forecast)
