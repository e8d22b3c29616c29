"""Ray Train data-parallel training: a 2-worker run registers a working model, a worker failure
resumes from the latest checkpoint, and impossible requests fail fast."""

from __future__ import annotations

import time

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from training.cluster import ClusterCapacityError
from training.distributed import DistributedSettings, fit_forecaster_distributed
from training.experiment import train_model
from training.models.lstm import LSTMModelConfig, LSTMTrainer
from training.registry import load_forecaster
from training.specs import DataSpec, TrainSettings
from training.trainer import EarlyStopping, TensorBatches

CONFIG = LSTMModelConfig(epochs=4, sequence_length=32, hidden_units=16, patience=10)


@pytest.fixture(scope="module")
def frames():
    from training.data import load_data

    return {"BTC/USDT": load_data("BTC/USDT", data_path="sample", days_back=60)}


@pytest.fixture(scope="module")
def two_worker_run(ray_cluster, tracking):
    settings = TrainSettings(
        data=DataSpec(days_back=60),
        config=CONFIG,
        model_name="dist_lstm",
        experiment_name="distributed",
        num_workers=2,
    )
    return train_model(settings)


@pytest.mark.slow
def test_two_workers_register_a_model_with_the_pyfunc_contract(two_worker_run, frames):
    assert two_worker_run.version == "1"
    client = MlflowClient()
    run = client.get_run(two_worker_run.run_id)
    assert run.data.params["num_workers"] == "2"
    assert "test_interval_coverage" in run.data.metrics
    # per-epoch metrics came from the driver, one point per epoch
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
    assert steps == list(range(len(steps))) and 1 <= len(steps) <= CONFIG.epochs
    assert len(client.get_metric_history(run.info.run_id, "train_samples_per_s")) == len(steps)

    forecaster, version = load_forecaster("dist_lstm", "1")
    assert version.run_id == two_worker_run.run_id
    assert forecaster.metadata["ray_train"]["num_workers"] == 2
    closes = frames["BTC/USDT"].to_numpy()
    windows = np.stack([closes[i : i + 32] for i in range(len(closes) - 64, len(closes) - 32)])
    pyfunc = mlflow.pyfunc.load_model("models:/dist_lstm/1")
    out = pyfunc.predict(windows)
    assert isinstance(out, pd.DataFrame) and len(out) == len(windows)
    assert list(out.columns) == ["prediction", "predicted_return", "lower", "upper"]
    assert np.isfinite(out.to_numpy()).all()
    assert (out["lower"] <= out["prediction"]).all() and (out["prediction"] <= out["upper"]).all()
    np.testing.assert_allclose(out["predicted_return"], out["prediction"] / closes[-33:-1, 3] - 1)
    pd.testing.assert_frame_equal(out, forecaster.predict(windows))


@pytest.mark.slow
def test_a_worker_failure_resumes_from_the_latest_checkpoint(two_worker_run, frames, tmp_path):
    result = fit_forecaster_distributed(
        frames,
        CONFIG,
        2,
        DistributedSettings(fail_at_epoch=2, max_failures=1, storage_path=str(tmp_path)),
    )
    # restarted at epoch 2 from the epoch-1 checkpoint, not from scratch
    assert result.forecaster.metadata["ray_train"]["resumed_from_epoch"] == 2
    # and the restored weights, optimizer and RNG reproduce the uninterrupted run exactly
    history = MlflowClient().get_metric_history(two_worker_run.run_id, "val_loss")
    uninterrupted = [m.value for m in sorted(history, key=lambda m: m.step)]
    np.testing.assert_allclose(result.history["val_loss"], uninterrupted, rtol=1e-6)
    assert not list(tmp_path.iterdir())  # checkpoints removed once the model was rebuilt


def test_more_workers_than_the_cluster_holds_fails_within_seconds(ray_cluster, frames):
    start = time.monotonic()
    with pytest.raises(ClusterCapacityError, match=r"4 workers .* need 4 CPU.* has 2 CPU"):
        fit_forecaster_distributed(frames, CONFIG, 4)
    with pytest.raises(ClusterCapacityError, match="3 CPU"):
        fit_forecaster_distributed(frames, CONFIG, 1, DistributedSettings(cpus_per_worker=3))
    assert time.monotonic() - start < 10
    with pytest.raises(ValueError, match="num_workers must be >= 1"):
        fit_forecaster_distributed(frames, CONFIG, 0)


def test_early_stopping_matches_the_shared_trainer():
    """Replaying the core trainer's validation losses stops at the same epoch with the same
    best epoch, so distributed and in-process runs stop alike."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 15, 7, generator=g), torch.randn(256, generator=g)  # pure noise
    config = LSTMModelConfig(
        sequence_length=16, hidden_units=16, epochs=30, patience=3, learning_rate=0.02
    )
    trainer = LSTMTrainer(config, show_progress=False)
    history = trainer.train(
        TensorBatches(x[:192], y[:192], 32, True), TensorBatches(x[192:], y[192:], 64)
    )
    assert len(history["val_loss"]) < config.epochs  # it did stop early on noise
    stopping = EarlyStopping()
    stops = []
    for train_loss, val_loss in zip(history["train_loss"], history["val_loss"], strict=True):
        stopping.update(train_loss, val_loss, trainer.model)
        stops.append(stopping.should_stop(config.patience))
    assert stops == [False] * (len(stops) - 1) + [True]
    assert stopping.history() == history
