"""The model registry: model type name -> (model, config, trainer classes, search space)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

from torch import nn

from training.config import ModelConfig
from training.models import cnn_lstm, lstm, transformer
from training.trainer import BaseTrainer


class ModelSpec(NamedTuple):
    model_class: type[nn.Module]
    config_class: type[ModelConfig]
    trainer_class: type[BaseTrainer]
    search_space: Callable[[], dict]
    multi_asset: bool


MODEL_TYPES: dict[str, ModelSpec] = {
    "lstm": ModelSpec(
        lstm.LSTMModel, lstm.LSTMModelConfig, lstm.LSTMTrainer, lstm.search_space, False
    ),
    "cnn_lstm": ModelSpec(
        cnn_lstm.CNNLSTMModel,
        cnn_lstm.CNNLSTMConfig,
        cnn_lstm.CNNLSTMTrainer,
        cnn_lstm.search_space,
        True,
    ),
    "transformer": ModelSpec(
        transformer.TransformerModel,
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


def model_type_of(config: ModelConfig) -> str:
    """The model type whose config class `config` is (e.g. LSTMModelConfig -> "lstm")."""
    for name, spec in MODEL_TYPES.items():
        if type(config) is spec.config_class:
            return name
    raise ValueError(
        f"{type(config).__name__} is no model's config; use one of "
        f"{[s.config_class.__name__ for s in MODEL_TYPES.values()]}"
    )


def build_config(
    model_type: str, values: Mapping | None = None, num_assets: int = 1
) -> ModelConfig:
    """A model type's config from user values (old names accepted, see training.config); for a
    multi-asset model the data decides num_assets."""
    spec = get_model_spec(model_type)
    values = dict(values or {})
    if spec.multi_asset:
        values["num_assets"] = num_assets
    return spec.config_class.from_dict(values)
