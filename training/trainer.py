"""The one trainer every model shares: epochs, early stopping with best-weights restore,
gradient clipping, seeding, device choice, a progress bar and per-epoch MLflow metrics."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import mlflow
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from training.config import ModelConfig

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if device and device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TensorBatches:
    """Mini-batches over in-memory tensors; much cheaper per batch than a DataLoader over a
    TensorDataset, and reshuffled each pass from a seeded generator."""

    def __init__(self, x, y, batch_size: int, shuffle: bool = False, seed: int = 0):
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.y = torch.as_tensor(y, dtype=torch.float32)
        if len(self.x) != len(self.y):
            raise ValueError(f"{len(self.x)} inputs but {len(self.y)} targets")
        self.batch_size, self.shuffle = batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

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
        return self.stale >= patience

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


class BaseTrainer:
    """Trains `model_class` on batches of (inputs [B, T, F], targets [B]).

    Subclasses only set `model_class`; everything about the loop lives here.
    """

    model_class: type[nn.Module]

    def __init__(self, config: ModelConfig, device: str | None = None, show_progress: bool = True):
        self.config = config
        seed_everything(config.seed)
        self.device = pick_device(device)
        self.model = self.model_class(config).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        # Huber: hourly returns are fat-tailed, a few crash bars should not dominate the fit.
        self.loss_fn = nn.HuberLoss(delta=1.0)
        self.show_progress = show_progress

    def train_epoch(self, batches: Batches) -> float:
        """One pass over the training batches; returns the mean loss per sample."""
        self.model.train()
        total, count = 0.0, 0
        for x, y in batches:
            x, y = x.to(self.device), y.to(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model(x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.optimizer.step()
            total += loss.item() * len(y)
            count += len(y)
        return total / max(count, 1)

    @torch.no_grad()
    def evaluate(self, batches: Batches) -> float:
        """Mean loss per sample without updating weights."""
        self.model.eval()
        total, count = 0.0, 0
        for x, y in batches:
            x, y = x.to(self.device), y.to(self.device)
            total += self.loss_fn(self.model(x), y).item() * len(y)
            count += len(y)
        return total / max(count, 1)

    def train(self, train_loader: Batches, val_loader: Batches) -> dict[str, list[float]]:
        """Train with early stopping on validation loss and restore the best weights.

        Returns:
            History with per-epoch "train_loss" and "val_loss" lists and "best_epoch".
        """
        stopping = EarlyStopping()
        epochs = tqdm(
            range(self.config.epochs),
            desc=self.model_class.__name__,
            disable=not self.show_progress,
        )
        for epoch in epochs:
            train_loss = self.train_epoch(train_loader)
            val_loss = self.evaluate(val_loader)
            stopping.update(train_loss, val_loss, self.model)
            epochs.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
            if mlflow.active_run():
                mlflow.log_metrics({"train_loss": train_loss, "val_loss": val_loss}, step=epoch)
            if stopping.should_stop(self.config.patience):
                break
        if stopping.best_state is not None:
            self.model.load_state_dict(stopping.best_state)
        return stopping.history()

    @torch.no_grad()
    def predict(self, x: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """Model outputs for inputs [n, T, F] as a float64 array [n]."""
        self.model.eval()
        out = [
            self.model(torch.as_tensor(x[i : i + batch_size], device=self.device)).cpu()
            for i in range(0, len(x), batch_size)
        ]
        return torch.cat(out).double().numpy()
