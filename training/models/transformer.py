"""Transformer encoder forecaster: projected features plus learned positions, causal
self-attention, and a linear head on the last step."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.config import ModelConfig
from training.trainer import BaseTrainer


@dataclass(frozen=True)
class TransformerConfig(ModelConfig):
    d_model: int = 64
    nhead: int = 4
    num_layers: int = 2
    dim_feedforward: int = 128


class TransformerModel(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        if config.d_model % config.nhead:
            raise ValueError(f"d_model {config.d_model} must be divisible by nhead {config.nhead}")
        steps = config.sequence_length  # the most steps a window may have
        self.proj = nn.Linear(config.input_size, config.d_model)
        self.pos = nn.Parameter(torch.zeros(1, steps, config.d_model))
        layer = nn.TransformerEncoderLayer(
            config.d_model,
            config.nhead,
            config.dim_feedforward,
            config.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        mask = nn.Transformer.generate_square_subsequent_mask(steps)
        self.register_buffer("mask", mask, persistent=False)
        self.head = nn.Sequential(nn.LayerNorm(config.d_model), nn.Linear(config.d_model, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, T, F], T <= sequence_length
        steps = x.shape[1]
        if steps > self.pos.shape[1]:
            raise ValueError(f"windows of {steps} steps exceed sequence_length {self.pos.shape[1]}")
        # positions count back from the last step, so the forecast step always has the same one
        z = self.proj(x) + self.pos[:, -steps:]  # [B, T, D]
        z = self.encoder(z, mask=self.mask[:steps, :steps], is_causal=True)  # [B, T, D]
        return self.head(z[:, -1]).squeeze(-1)  # [B]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # bundles saved before windows of any length: one position fewer, and a saved mask
        pos = state_dict[prefix + "pos"] if prefix + "pos" in state_dict else None
        if pos is not None and pos.shape[1] == self.pos.shape[1] - 1:
            state_dict[prefix + "pos"] = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
        state_dict.pop(prefix + "mask", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class TransformerTrainer(BaseTrainer):
    model_class = TransformerModel


def search_space() -> dict:
    """Ray Tune search space over this model's and the trainer's knobs."""
    from ray import tune

    return {
        "d_model": tune.choice([32, 64]),
        "nhead": tune.choice([2, 4]),
        "num_layers": tune.choice([1, 2, 3]),
        "dim_feedforward": tune.choice([64, 128, 256]),
        "dropout": tune.uniform(0.0, 0.3),
        "learning_rate": tune.loguniform(1e-4, 2e-3),
        "sequence_length": tune.choice([32, 48, 60]),
        "batch_size": tune.choice([32, 64, 128]),
    }
