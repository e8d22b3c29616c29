"""Multi-asset CNN-LSTM: 1-D convolutions mix the aligned assets' features across nearby bars,
an LSTM reads the result, and a linear head forecasts the first asset's next return."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.config import ModelConfig
from training.trainer import BaseTrainer


@dataclass(frozen=True)
class CNNLSTMConfig(ModelConfig):
    num_assets: int = 2  # a field here; ModelConfig's property says 1
    cnn_filters: int = 32
    kernel_size: int = 3
    lstm_hidden_units: int = 64
    num_layers: int = 1


class CNNLSTMModel(nn.Module):
    def __init__(self, config: CNNLSTMConfig):
        super().__init__()
        pad = config.kernel_size // 2
        self.conv = nn.Sequential(
            nn.Conv1d(config.input_size, config.cnn_filters, config.kernel_size, padding=pad),
            nn.GELU(),
            nn.Conv1d(config.cnn_filters, config.cnn_filters, config.kernel_size, padding=pad),
            nn.GELU(),
        )
        self.lstm = nn.LSTM(
            config.cnn_filters,
            config.lstm_hidden_units,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.head = nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(config.lstm_hidden_units, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, T, A*F]
        z = self.conv(x.transpose(1, 2)).transpose(1, 2)  # [B, T, C]
        out, _ = self.lstm(z)  # [B, T, H]
        return self.head(out[:, -1]).squeeze(-1)  # [B]


class CNNLSTMTrainer(BaseTrainer):
    model_class = CNNLSTMModel


def search_space() -> dict:
    """Ray Tune search space over this model's and the trainer's knobs."""
    from ray import tune

    return {
        "cnn_filters": tune.choice([16, 32, 64]),
        "kernel_size": tune.choice([3, 5]),
        "lstm_hidden_units": tune.choice([32, 64, 128]),
        "num_layers": tune.choice([1, 2]),
        "dropout": tune.uniform(0.0, 0.4),
        "learning_rate": tune.loguniform(1e-4, 3e-3),
        "sequence_length": tune.choice([32, 48, 60]),
        "batch_size": tune.choice([32, 64, 128]),
    }
