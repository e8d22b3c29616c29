"""The one trainer every model shares: the epoch loop (early stopping, a non-finite guard,
best-weights restore, a per-epoch callback), gradient clipping, seeding and device choice.

In-process training, Tune trials and Ray Train workers all run `BaseTrainer.train`; the last two
are thin adapters that pass a callback (report, checkpoint) and, for Ray Train, a `reduce` that
all-reduces the epoch's loss totals across workers.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from training.cluster import pick_device
from training.config import ModelConfig

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TensorBatches:
    """Mini-batches over in-memory tensors; much cheaper per batch than a DataLoader over a
    TensorDataset. Shuffled passes draw their order from (seed, epoch) once the trainer calls
    `set_epoch`, so a run resumed at epoch k sees the batches an uninterrupted one would."""

    def __init__(self, x, y, batch_size: int, shuffle: bool = False, seed: int = 0):
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.y = torch.as_tensor(y, dtype=torch.float32)
        if len(self.x) != len(self.y):
            raise ValueError(f"{len(self.x)} inputs but {len(self.y)} targets")
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.generator = torch.Generator().manual_seed(seed)

    def set_epoch(self, epoch: int) -> None:
        """Draw the next pass's order from (seed, epoch), like DistributedSampler.set_epoch."""
        self.generator.manual_seed(self.seed * 1_000_003 + epoch)

    def __len__(self) -> int:
        return (len(self.x) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.x[idx], self.y[idx]


@dataclass
class EarlyStopping:
    """Early-stopping bookkeeping of the shared trainer, kept as plain data so a checkpoint can
    hold it: losses per epoch, the best validation loss and its weights, epochs without gain."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int = 0
    stale: int = 0
    best_state: dict | None = None

    @property
    def next_epoch(self) -> int:
        return len(self.val_loss)

    def update(self, train_loss: float, val_loss: float, model: torch.nn.Module) -> bool:
        """Record an epoch; keep a copy of the weights when validation loss improved."""
        epoch = self.next_epoch
        self.train_loss.append(float(train_loss))
        self.val_loss.append(float(val_loss))
        if val_loss < self.best_loss:
            self.best_loss, self.best_epoch, self.stale = float(val_loss), epoch, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            return True
        self.stale += 1
        return False

    def should_stop(self, patience: int) -> bool:
        """Out of patience, or the validation loss is no longer finite (the run diverged)."""
        return self.stale >= patience or not math.isfinite(self.val_loss[-1])

    def history(self) -> dict[str, list[float]]:
        """The shape BaseTrainer.train returns."""
        return {
            "train_loss": list(self.train_loss),
            "val_loss": list(self.val_loss),
            "best_epoch": [self.best_epoch],
        }

    def to_dict(self) -> dict:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, values: dict) -> EarlyStopping:
        return cls(**values)


@dataclass(frozen=True)
class EpochTotals:
    """An epoch's loss sums and sample counts: what Ray Train workers all-reduce."""

    train_loss_sum: float
    train_samples: int
    val_loss_sum: float
    val_samples: int
    seconds: float  # wall time of the training pass

    @property
    def train_loss(self) -> float:
        return self.train_loss_sum / max(self.train_samples, 1)

    @property
    def val_loss(self) -> float:
        return self.val_loss_sum / max(self.val_samples, 1)


@dataclass(frozen=True)
class EpochReport:
    """What the per-epoch callback sees; `stopping` is the live bookkeeping (best weights)."""

    epoch: int
    totals: EpochTotals
    improved: bool
    stopping: EarlyStopping

    @property
    def metrics(self) -> dict[str, float]:
        return {
            "epoch": self.epoch,
            "train_loss": self.totals.train_loss,
            "val_loss": self.totals.val_loss,
            "best_val_loss": self.stopping.best_loss,
            "epochs_since_best": self.stopping.stale,
            "train_samples_per_s": self.totals.train_samples / max(self.totals.seconds, 1e-9),
        }


EpochCallback = Callable[[EpochReport], None]


class BaseTrainer:
    """Trains `model_class` on batches of (inputs [B, T, F], targets [B]).

    Subclasses only set `model_class`; everything about the loop lives here.

    Attributes:
        model: the network; its weights are the trained (best) ones after `train`.
        train_module: what the training pass calls: `model`, or a DDP wrapper around it.
        history: the last `train` call's history.
    """

    model_class: type[nn.Module]

    def __init__(self, config: ModelConfig, device: str | None = None, show_progress: bool = True):
        self.config = config
        seed_everything(config.seed)
        self.device = pick_device(device)
        self.model = self.model_class(config).to(self.device)
        self.train_module: nn.Module = self.model
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        # Huber: hourly returns are fat-tailed, a few crash bars should not dominate the fit.
        self.loss_fn = nn.HuberLoss(delta=1.0)
        self.show_progress = show_progress
        self.history: dict[str, list[float]] = {}

    def _check_inputs(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        if x.ndim != 3 or x.shape[-1] != self.config.input_size:
            raise ValueError(
                f"inputs must be [batch, steps, {self.config.input_size}] (input_features="
                f"{self.config.input_features} x num_assets={self.config.num_assets}); got "
                f"{list(x.shape)}: make the loaders' feature width match the config"
            )
        if y is not None and y.shape != x.shape[:1]:
            raise ValueError(f"targets must be [batch] = {list(x.shape[:1])}, got {list(y.shape)}")

    def _pass(self, batches: Batches, update: bool) -> tuple[float, int]:
        """(sum of per-sample losses, samples) over one pass; `update` trains on it."""
        module = self.train_module if update else self.model
        module.train(update)
        total, count = 0.0, 0
        with torch.set_grad_enabled(update):
            for x, y in batches:
                self._check_inputs(x, y)
                x, y = x.to(self.device), y.to(self.device)
                loss = self.loss_fn(module(x), y)
                if update:
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
                    self.optimizer.step()
                total += loss.item() * len(y)
                count += len(y)
        return total, count

    def train_epoch(self, batches: Batches) -> float:
        """One pass over the training batches; returns the mean loss per sample."""
        total, count = self._pass(batches, update=True)
        return total / max(count, 1)

    def evaluate(self, batches: Batches) -> float:
        """Mean loss per sample without updating weights."""
        total, count = self._pass(batches, update=False)
        return total / max(count, 1)

    def train(
        self,
        train_loader: Batches,
        val_loader: Batches,
        callback: EpochCallback | None = None,
        *,
        resume: EarlyStopping | None = None,
        reduce: Callable[[EpochTotals], EpochTotals] | None = None,
    ) -> dict[str, list[float]]:
        """Train with early stopping on validation loss and restore the best weights.

        Stops after `patience` epochs without improvement or on a non-finite validation loss.

        Args:
            train_loader, val_loader: batches of (x [B, T, input_size], y [B]), e.g. plain
                torch DataLoaders; a loader with `set_epoch` is told each epoch.
            callback: called after every epoch (Tune reports, Ray Train checkpoints).
            resume: bookkeeping of a checkpointed run; training continues at its next epoch.
            reduce: combines the epoch's totals across data-parallel workers.

        Returns:
            History with per-epoch "train_loss" and "val_loss" lists and "best_epoch".
        """
        stopping = resume or EarlyStopping()
        epochs = tqdm(
            range(stopping.next_epoch, self.config.epochs),
            desc=self.model_class.__name__,
            disable=not self.show_progress,
        )
        for epoch in epochs:
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(epoch)
            start = time.perf_counter()
            train_sum, train_n = self._pass(train_loader, update=True)
            seconds = time.perf_counter() - start
            totals = EpochTotals(train_sum, train_n, *self._pass(val_loader, False), seconds)
            totals = reduce(totals) if reduce else totals
            improved = stopping.update(totals.train_loss, totals.val_loss, self.model)
            epochs.set_postfix(train=f"{totals.train_loss:.4f}", val=f"{totals.val_loss:.4f}")
            # a run can only be active where mlflow was imported: Ray workers never pay its import
            mlflow = sys.modules.get("mlflow")
            if mlflow is not None and mlflow.active_run():
                values = {"train_loss": totals.train_loss, "val_loss": totals.val_loss}
                mlflow.log_metrics(values, step=epoch)
            if callback:
                callback(EpochReport(epoch, totals, improved, stopping))
            if stopping.should_stop(self.config.patience):
                break
        if stopping.best_state is not None:
            self.model.load_state_dict(stopping.best_state)
        self.history = stopping.history()
        return self.history

    @torch.no_grad()
    def predict(self, x: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """Model outputs for inputs [n, T, F] as a float64 array [n]."""
        self.model.eval()
        xt = torch.as_tensor(x, dtype=torch.float32)
        self._check_inputs(xt)
        out = [
            self.model(xt[i : i + batch_size].to(self.device)).cpu()
            for i in range(0, len(xt), batch_size)
        ]
        return torch.cat(out).double().numpy()
