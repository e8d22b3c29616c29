"""One conformance test over every registered model type, plus the shared trainer's contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from training.models import MODEL_TYPES, get_model_spec
from training.models.cnn_lstm import CNNLSTMConfig, CNNLSTMModel, CNNLSTMTrainer
from training.models.lstm import LSTMModelConfig, LSTMTrainer
from training.models.transformer import TransformerConfig, TransformerModel, TransformerTrainer
from training.train import load_data, main  # noqa: F401  (the seed guide's import)

TINY = {
    "lstm": {"hidden_size": 8},
    "cnn_lstm": {"hidden_size": 8, "conv_channels": 4},
    "transformer": {"d_model": 8, "nhead": 2, "dim_feedforward": 16},
}


def loaders(n=96, steps=15, features=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, steps, features, generator=g)
    y = x[:, -1, 0] * 0.5 + 0.1 * torch.randn(n, generator=g)  # learnable signal
    ds = TensorDataset(x, y)
    return DataLoader(ds, batch_size=32, shuffle=False), DataLoader(ds, batch_size=64)


@pytest.mark.parametrize("model_type", sorted(MODEL_TYPES))
def test_every_model_type_conforms(model_type):
    spec = get_model_spec(model_type)
    extra = {"num_assets": 2} if spec.multi_asset else {}
    config = spec.config_class(
        sequence_length=16, input_size=7, epochs=3, **TINY[model_type], **extra
    )
    trainer = spec.trainer_class(config, show_progress=False)
    train, val = loaders()
    history = trainer.train(train, val)
    assert len(history["train_loss"]) == len(history["val_loss"]) == 3
    assert history["val_loss"][-1] < history["val_loss"][0]  # it learns the planted signal
    out = trainer.predict(np.random.randn(5, 15, 7).astype(np.float32))
    assert out.shape == (5,) and np.isfinite(out).all()
    space = spec.search_space()
    assert {"learning_rate", "dropout", "sequence_length", "batch_size"} <= set(space)
    config.from_dict({k: v for k, v in config.to_dict().items()})


def test_guide_api_and_seeded_repeatability():
    config = LSTMModelConfig(sequence_length=16, hidden_size=8, epochs=2, seed=7)
    runs = [LSTMTrainer(config, show_progress=False).train(*loaders()) for _ in range(2)]
    assert runs[0]["train_loss"] == runs[1]["train_loss"]
    assert isinstance(CNNLSTMModel(CNNLSTMConfig(num_assets=2, input_size=14)), torch.nn.Module)
    assert isinstance(TransformerModel(TransformerConfig(sequence_length=16)), torch.nn.Module)
    assert CNNLSTMTrainer.model_class is CNNLSTMModel
    assert TransformerTrainer.model_class is TransformerModel


def test_early_stopping_restores_the_best_weights():
    config = LSTMModelConfig(
        sequence_length=16, hidden_size=8, epochs=30, patience=2, learning_rate=0.05
    )
    trainer = LSTMTrainer(config, show_progress=False)
    train, _ = loaders()
    g = torch.Generator().manual_seed(3)
    noise = TensorDataset(torch.randn(64, 15, 7, generator=g), torch.randn(64, generator=g))
    val = DataLoader(noise, batch_size=64)  # unrelated targets: fitting train hurts validation
    history = trainer.train(train, val)
    best = history["best_epoch"][0]
    assert len(history["val_loss"]) == best + 1 + config.patience < config.epochs
    assert trainer.evaluate(val) == pytest.approx(min(history["val_loss"]), rel=1e-5)


def test_unknown_model_type_and_config_keys():
    with pytest.raises(ValueError, match="unknown model type 'gru'; choose one of"):
        get_model_spec("gru")
    with pytest.raises(ValueError, match=r"unknown LSTMModelConfig keys \['hiden_size'\]"):
        LSTMModelConfig.from_dict({"hiden_size": 3})
