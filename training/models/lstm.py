"""LSTM forecaster: stacked LSTM over the feature sequence, a linear head on the last state."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.config import ModelConfig
from training.trainer import BaseTrainer


@dataclass(frozen=True)
class LSTMModelConfig(ModelConfig):
    hidden_units: int = 64
    num_layers: int = 2


class LSTMModel(nn.Module):
    def __init__(self, config: LSTMModelConfig):
        super().__init__()
        self.lstm = nn.LSTM(
            config.input_size,
            config.hidden_units,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.hidden_units, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, T, F]
        out, _ = self.lstm(x)  # [B, T, H]
        return self.head(out[:, -1]).squeeze(-1)  # [B]


class LSTMTrainer(BaseTrainer):
    model_class = LSTMModel


def search_space() -> dict:
    """Ray Tune search space over this model's and the trainer's knobs."""
    from ray import tune

    return {
        "hidden_units": tune.choice([32, 64, 128]),
        "num_layers": tune.choice([1, 2, 3]),
        "dropout": tune.uniform(0.0, 0.4),
        "learning_rate": tune.loguniform(1e-4, 3e-3),
        "sequence_length": tune.choice([32, 48, 60, 96]),
        "batch_size": tune.choice([32, 64, 128]),
    }
