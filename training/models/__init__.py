"""The model registry: model type name -> (config class, trainer class, search space)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from training.config import ModelConfig
from training.models import cnn_lstm, lstm, transformer
from training.trainer import BaseTrainer


class ModelSpec(NamedTuple):
    config_class: type[ModelConfig]
    trainer_class: type[BaseTrainer]
    search_space: Callable[[], dict]
    multi_asset: bool


MODEL_TYPES: dict[str, ModelSpec] = {
    "lstm": ModelSpec(lstm.LSTMModelConfig, lstm.LSTMTrainer, lstm.search_space, False),
    "cnn_lstm": ModelSpec(
        cnn_lstm.CNNLSTMConfig, cnn_lstm.CNNLSTMTrainer, cnn_lstm.search_space, True
    ),
    "transformer": ModelSpec(
        transformer.TransformerConfig,
        transformer.TransformerTrainer,
        transformer.search_space,
        False,
    ),
}


def get_model_spec(model_type: str) -> ModelSpec:
    """Look up a model type, with an error listing the known ones."""
    try:
        return MODEL_TYPES[model_type]
    except KeyError:
        raise ValueError(
            f"unknown model type {model_type!r}; choose one of {sorted(MODEL_TYPES)}"
        ) from None
