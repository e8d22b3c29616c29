"""Data-parallel training on a Ray cluster with Ray Train's TorchTrainer.

The driver prepares the data exactly as in-process training does (`training.loaders`); each
worker runs the shared trainer loop (`BaseTrainer.train`) on its shard with the model wrapped in
DDP. Two small hooks make it distributed: `reduce` all-reduces each epoch's loss totals, and the
per-epoch callback reports them with a checkpoint, from which a restarted worker group resumes.
The driver logs the per-epoch metrics to the active MLflow run (workers never touch MLflow),
rebuilds the best model from the final checkpoint and finishes it like any fit.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pandas as pd
import torch

from training.cluster import check_capacity, cluster_gpus, ensure_ray, free_cpus_per_unit
from training.config import ModelConfig
from training.data import PROJECT_ROOT
from training.loaders import FitResult, TrainingData, prepare_data
from training.models import get_model_spec, model_type_of
from training.trainer import EarlyStopping, EpochReport, EpochTotals, TensorBatches

log = logging.getLogger(__name__)

DEFAULT_STORAGE = PROJECT_ROOT / "ray_results"
STATE_FILE = "train_state.pt"


@dataclass(frozen=True)
class DistributedSettings:
    """How Ray Train runs the workers.

    Attributes:
        cpus_per_worker: CPUs reserved (and torch threads used) per worker; None splits the
            CPUs free now (not the cluster's total, so training fits beside a Serve app).
        max_failures: worker-group restarts allowed; each resumes from the latest checkpoint.
        storage_path: where Ray Train keeps checkpoints (must be shared storage on a multi-node
            cluster); the run directory is deleted after a successful run.
        placement_timeout_s: how long to wait for busy CPUs/GPUs to free before giving up.
        placement_strategy: "PACK" (Ray Train's default) fills a node before the next, so
            workers all-reduce locally; "SPREAD" puts them on different nodes where it can,
            so every node's CPUs work.
        fail_at_epoch: testing aid: rank 0 raises once before this epoch (>= 1), right after
            the previous epoch's checkpoint, to exercise recovery.
    """

    cpus_per_worker: float | None = None
    max_failures: int = 2
    storage_path: str | None = None
    placement_timeout_s: float = 20.0
    placement_strategy: str = "PACK"
    fail_at_epoch: int | None = None


def _all_reduce(values: list[float], device: torch.device, op: str = "SUM") -> list[float]:
    """Reduce across workers with torch.distributed (SUM or MAX); a no-op on one worker."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)  # NCCL reduces GPU tensors only
    torch.distributed.all_reduce(t, op=getattr(torch.distributed.ReduceOp, op))
    return t.tolist()


def reduce_totals(totals: EpochTotals, device: torch.device) -> EpochTotals:
    """Every worker's loss sums and counts added up; the slowest worker's time sets the pace."""
    t_sum, t_n, v_sum, v_n = _all_reduce(
        [totals.train_loss_sum, totals.train_samples, totals.val_loss_sum, totals.val_samples],
        device,
    )
    (seconds,) = _all_reduce([totals.seconds], device, "MAX")
    return EpochTotals(t_sum, int(t_n), v_sum, int(v_n), seconds)


def _load_checkpoint(checkpoint) -> dict:
    with checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)


def train_loop_per_worker(loop_config: Mapping) -> None:
    """Ray Train worker: resume if a checkpoint exists, then the shared trainer loop on this
    worker's shard, reporting (rank 0: with a checkpoint) every epoch."""
    import ray
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(loop_config["threads"])))
    config: ModelConfig = loop_config["config"]
    fail_at_epoch: int | None = loop_config["fail_at_epoch"]
    x_train, y_train, x_val, y_val = ray.get(loop_config["data"])
    per_rank = len(x_train) // world  # equal shards: DDP needs the same step count on every rank
    # copies: arrays from the object store are read-only views
    shard = TensorBatches(
        x_train[rank::world][:per_rank].copy(),
        y_train[rank::world][:per_rank].copy(),
        max(1, config.batch_size // world),  # keeps the global batch of the config
        shuffle=True,
        seed=config.seed + rank,
    )
    val = TensorBatches(x_val[rank::world].copy(), y_val[rank::world].copy(), 1024)

    device = ray.train.torch.get_device()
    trainer = get_model_spec(model_type_of(config)).trainer_class(
        config, device=str(device), show_progress=False
    )
    stopping, epoch_log = None, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        state = _load_checkpoint(checkpoint)
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        stopping, epoch_log = EarlyStopping.from_dict(state["stopping"]), state["epoch_log"]
        # every rank draws the same dropout masks in the same order, so rank 0's RNG fits all
        torch.set_rng_state(state["rng"])
    resumed = checkpoint is not None
    trainer.train_module = ray.train.torch.prepare_model(trainer.model)

    def report(epoch: EpochReport) -> None:
        metrics = epoch.metrics
        epoch_log.append({"samples_per_s": metrics["train_samples_per_s"], "resumed": int(resumed)})
        if rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            state = {
                "model": trainer.model.state_dict(),
                "optimizer": trainer.optimizer.state_dict(),
                "stopping": epoch.stopping.to_dict(),
                "epoch_log": epoch_log,
                "rng": torch.get_rng_state(),
            }
            torch.save(state, Path(tmp) / STATE_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        if fail_at_epoch == epoch.epoch + 1 and not resumed:
            raise RuntimeError(f"injected worker failure before epoch {fail_at_epoch}")

    trainer.train(shard, val, report, resume=stopping, reduce=lambda t: reduce_totals(t, device))


def _log_epochs(history: Mapping[str, list[float]], epoch_log: list[dict]) -> None:
    """Per-epoch metrics into the active MLflow run, as in-process training logs them."""
    if not mlflow.active_run():
        return
    for epoch, (train_loss, val_loss, extra) in enumerate(
        zip(history["train_loss"], history["val_loss"], epoch_log, strict=True)
    ):
        values = {"train_loss": train_loss, "val_loss": val_loss}
        mlflow.log_metrics(values | {"train_samples_per_s": extra["samples_per_s"]}, step=epoch)


def run_torch_trainer(
    data: TrainingData, num_workers: int, settings: DistributedSettings
) -> tuple[dict, dict]:
    """Run the workers; returns the final checkpoint's state and the run's facts."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    use_gpu = cluster_gpus() >= 1
    cpus = settings.cpus_per_worker or free_cpus_per_unit(num_workers)
    per_worker = {"CPU": float(cpus), **({"GPU": 1.0} if use_gpu else {})}
    check_capacity(num_workers, per_worker, "workers", settings.placement_timeout_s)
    train, val = data.splits["train"], data.splits["val"]
    storage = Path(settings.storage_path or DEFAULT_STORAGE).resolve()
    name = f"train_{data.model_type}_{datetime.now(UTC):%Y%m%d_%H%M%S_%f}"
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": data.config,
            "data": ray.put((train.x, train.y, val.x, val.y)),
            "threads": cpus,
            "fail_at_epoch": settings.fail_at_epoch,
        },
        scaling_config=ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker=per_worker,
            placement_strategy=settings.placement_strategy,
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
    frames: Mapping[str, pd.DataFrame],
    config: ModelConfig,
    num_workers: int = 2,
    settings: DistributedSettings | None = None,
) -> FitResult:
    """Train on `num_workers` Ray Train workers and finish like `training.fit.fit_forecaster`.

    Connects to Ray if needed (see `training.cluster.ensure_ray`). Per-epoch losses and
    throughput go to the active MLflow run, if any, from this process.

    Args:
        frames: validated candles per symbol; the first symbol is forecast.
        config: the model's config (its class says the model type).
        num_workers: data-parallel workers (>= 1); GPUs are used when the cluster has them.
        settings: resources, failure handling and checkpoint storage.

    Raises:
        ClusterCapacityError: the cluster cannot place the workers (raised within seconds).
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1 for Ray Train, got {num_workers}")
    settings = settings or DistributedSettings()
    data = prepare_data(frames, config)
    ensure_ray()
    state, facts = run_torch_trainer(data, num_workers, settings)
    stopping = EarlyStopping.from_dict(state["stopping"])
    history = stopping.history()
    _log_epochs(history, state["epoch_log"])

    trainer = get_model_spec(data.model_type).trainer_class(config, show_progress=False)
    trainer.model.load_state_dict(stopping.best_state)
    log.info(
        "Ray Train: %d workers, %d epochs in %.1fs, best epoch %d (val %.5f)",
        num_workers,
        len(history["val_loss"]),
        facts["seconds"],
        stopping.best_epoch,
        stopping.best_loss,
    )
    return data.fit_result(trainer, history, ray_train=facts)
