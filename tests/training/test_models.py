"""One conformance test over every registered model type, plus the shared trainer's contract."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from training.models import MODEL_TYPES, build_config, get_model_spec, model_type_of
from training.models.cnn_lstm import CNNLSTMConfig, CNNLSTMModel, CNNLSTMTrainer
from training.models.lstm import LSTMModelConfig, LSTMTrainer
from training.models.transformer import TransformerConfig, TransformerModel, TransformerTrainer
from training.train import load_data, main  # noqa: F401  (the seed guide's import)

TINY = {
    "lstm": {"hidden_units": 8},
    "cnn_lstm": {"lstm_hidden_units": 8, "cnn_filters": 4},
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
        sequence_length=16, input_features=7, epochs=3, **TINY[model_type], **extra
    )
    trainer = spec.trainer_class(config, show_progress=False)
    assert spec.trainer_class.model_class is spec.model_class
    assert model_type_of(config) == model_type
    train, val = loaders(features=config.input_size)
    history = trainer.train(train, val)
    assert len(history["train_loss"]) == len(history["val_loss"]) == 3
    assert history["val_loss"][-1] < history["val_loss"][0]  # it learns the planted signal
    out = trainer.predict(np.random.randn(5, 15, config.input_size).astype(np.float32))
    assert out.shape == (5,) and np.isfinite(out).all()
    space = spec.search_space()
    assert {"learning_rate", "dropout", "sequence_length", "batch_size"} <= set(space)
    assert config.from_dict({k: v for k, v in config.to_dict().items()}) == config


def test_guide_api_and_seeded_repeatability():
    config = LSTMModelConfig(sequence_length=16, hidden_units=8, epochs=2, seed=7)
    runs = [LSTMTrainer(config, show_progress=False).train(*loaders()) for _ in range(2)]
    assert runs[0]["train_loss"] == runs[1]["train_loss"]
    assert isinstance(CNNLSTMModel(CNNLSTMConfig(num_assets=2, input_features=7)), torch.nn.Module)
    assert isinstance(TransformerModel(TransformerConfig(sequence_length=16)), torch.nn.Module)
    assert CNNLSTMTrainer.model_class is CNNLSTMModel
    assert TransformerTrainer.model_class is TransformerModel


def test_early_stopping_restores_the_best_weights():
    config = LSTMModelConfig(
        sequence_length=16, hidden_units=8, epochs=30, patience=2, learning_rate=0.05
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


def test_the_guide_configs_and_plain_loaders_work_verbatim():
    """The three configs of the user guide, with its field names, train on plain DataLoaders
    over (x [B, T, input_features], y [B]), T being the window or one bar fewer."""
    configs = [
        LSTMModelConfig(sequence_length=60, input_features=5, hidden_units=50, epochs=100),
        CNNLSTMConfig(
            sequence_length=60, num_assets=5, input_features=5, cnn_filters=64, lstm_hidden_units=50
        ),
        TransformerConfig(
            sequence_length=120, input_features=5, d_model=128, nhead=8, num_layers=4
        ),
    ]
    trainers = [LSTMTrainer, CNNLSTMTrainer, TransformerTrainer]
    assert [c.input_size for c in configs] == [5, 25, 5]
    for config, trainer_class in zip(configs, trainers, strict=True):
        small = dataclasses.replace(config, epochs=1)
        for steps in (config.sequence_length, config.sequence_length - 1):
            trainer = trainer_class(small)
            history = trainer.train(*loaders(n=32, steps=steps, features=config.input_size))
            assert len(history["val_loss"]) == 1 and np.isfinite(history["val_loss"]).all()


def test_a_wrong_feature_width_names_expected_and_got():
    config = LSTMModelConfig(sequence_length=16, input_features=5, hidden_units=8, epochs=1)
    with pytest.raises(ValueError, match=r"\[batch, steps, 5\].*got \[32, 15, 7\]"):
        LSTMTrainer(config, show_progress=False).train(*loaders())
    x, y = next(iter(loaders()[0]))
    column = DataLoader(TensorDataset(x[:, :, :5], y[:, None]), batch_size=32)
    with pytest.raises(ValueError, match=r"targets must be \[batch\] = \[32\], got \[32, 1\]"):
        LSTMTrainer(config, show_progress=False).train(column, column)
    cnn = CNNLSTMConfig(sequence_length=16, num_assets=3, input_features=5, epochs=1)
    with pytest.raises(ValueError, match=r"input_features=5 x num_assets=3"):
        CNNLSTMTrainer(cnn, show_progress=False).train(*loaders())


def test_legacy_names_load_from_one_table():
    """Saved bundles, MLflow params and `--param hidden_size=32` use the old names."""
    assert LSTMModelConfig.from_dict({"hidden_size": 32, "input_size": 5}) == LSTMModelConfig(
        hidden_units=32, input_features=5
    )
    old_cnn = {"num_assets": 2, "input_size": 14, "conv_channels": 8, "hidden_size": 16}
    assert CNNLSTMConfig.from_dict(old_cnn) == CNNLSTMConfig(
        num_assets=2, input_features=7, cnn_filters=8, lstm_hidden_units=16
    )
    assert build_config("cnn_lstm", {"hidden_size": 16}, num_assets=3).num_assets == 3
    with pytest.raises(ValueError, match="disagrees"):
        LSTMModelConfig.from_dict({"hidden_size": 32, "hidden_units": 16})
    with pytest.raises(ValueError, match=r"unknown TransformerConfig keys \['hidden_size'\]"):
        TransformerConfig.from_dict({"hidden_size": 32})
    with pytest.raises(ValueError, match="whole number"):
        LSTMModelConfig(hidden_units=2.5)


def test_transformer_bundles_saved_before_any_window_length_still_load():
    config = TransformerConfig(sequence_length=16, d_model=8, nhead=2, dim_feedforward=16)
    new = TransformerModel(config).eval()
    old_state = {k: v for k, v in new.state_dict().items()}
    old_state["pos"] = torch.randn(1, 15, 8)  # the old model had sequence_length - 1 positions
    old_state["mask"] = torch.zeros(15, 15)
    new.load_state_dict(old_state)
    assert torch.equal(new.pos[:, 1:], old_state["pos"])


def test_callback_sees_every_epoch_and_a_non_finite_loss_stops():
    config = LSTMModelConfig(sequence_length=16, hidden_units=8, epochs=4, patience=10)
    reports = []
    train, val = loaders()
    history = LSTMTrainer(config, show_progress=False).train(train, val, callback=reports.append)
    assert [r.epoch for r in reports] == [0, 1, 2, 3]
    assert reports[-1].metrics["best_val_loss"] == min(history["val_loss"])
    x, y = next(iter(val))
    nan_val = DataLoader(TensorDataset(x, torch.full_like(y, float("nan"))), batch_size=64)
    history = LSTMTrainer(config, show_progress=False).train(train, nan_val)
    assert len(history["val_loss"]) == 1  # diverged (or bad data): no point going on
