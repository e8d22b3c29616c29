"""Ray Tune sweeps: nested MLflow runs per trial, the best model registered, ASHA stopping a
clearly worse trial early, Optuna sampling, and clear errors before any training."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from training.cluster import ClusterCapacityError
from training.registry import load_forecaster, resolve_version
from training.specs import DataSpec, TuneSettings
from training.tracking import TrackingError
from training.tune import build_param_space, run_sweep, trial_resources

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"hidden_units": 16, "num_layers": 1, "sequence_length": 32, "batch_size": 64}
BAD_LR = 5.0  # AdamW steps of size ~5 wreck the network: validation loss many times the others


def settings(tmp_path, **changes) -> TuneSettings:
    base = {
        "data": DataSpec(days_back=60),
        "epochs": 4,
        "grace_period": 1,
        "max_concurrent_trials": 2,
        "fixed": {**SMALL, "patience": 10},
        "storage_path": str(tmp_path / "ray_results"),
        "experiment_name": "sweeps",
    }
    return TuneSettings(**(base | changes))


@pytest.fixture(scope="module")
def sweep(ray_cluster, tracking, tmp_path_factory):
    """Four trials: two sane learning rates first, then two absurd ones."""
    from ray import tune

    tmp = tmp_path_factory.mktemp("sweep")
    return run_sweep(
        settings(
            tmp,
            num_samples=1,
            model_name="tuned_lstm",
            search_space={"learning_rate": tune.grid_search([1e-3, 2e-3, BAD_LR, BAD_LR])},
        )
    )


@pytest.mark.slow
def test_four_trials_make_four_nested_runs_and_the_best_is_registered(sweep):
    client = MlflowClient()
    parent = client.get_run(sweep.parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{sweep.parent_run_id}'",
    )
    assert len(children) == 4 == len(sweep.trials)
    best_child = min(children, key=lambda r: r.data.metrics["best_val_loss"])
    assert best_child.info.run_id == sweep.best_run_id
    assert parent.data.tags["best_run_id"] == sweep.best_run_id
    assert parent.data.metrics["best_val_loss"] == pytest.approx(sweep.best_val_loss)
    # every trial's epochs are in its run; the best run carries the full train-run record
    for child in children:
        history = client.get_metric_history(child.info.run_id, "val_loss")
        assert len(history) == int(child.data.metrics["epochs_run"])
    assert "test_interval_coverage" in best_child.data.metrics
    assert float(best_child.data.params["learning_rate"]) < 1.0

    version = resolve_version("tuned_lstm", "latest")
    assert version.run_id == sweep.best_run_id and sweep.version == str(version.version)
    assert float(version.tags["param.learning_rate"]) == sweep.best_config["learning_rate"]
    forecaster, _ = load_forecaster("tuned_lstm", version.version)
    assert forecaster.config.learning_rate == sweep.best_config["learning_rate"]
    assert forecaster.config.hidden_units == 16


@pytest.mark.slow
def test_asha_stops_the_clearly_worse_trials_early(sweep):
    bad = [t for t in sweep.trials if t.config["learning_rate"] == BAD_LR]
    good = [t for t in sweep.trials if t.config["learning_rate"] < 1.0]
    assert len(bad) == 2 and len(good) == 2
    for trial in bad:
        assert trial.stopped_by == "asha" and trial.epochs < 4
        assert trial.best_val_loss > 2 * max(t.best_val_loss for t in good)
    assert any(t.stopped_by == "completed" and t.epochs == 4 for t in good)


@pytest.mark.slow
def test_optuna_sweep_registers_a_model(ray_cluster, tracking, tmp_path):
    result = run_sweep(
        settings(tmp_path, num_samples=2, epochs=2, use_optuna=True, model_name="optuna_lstm")
    )
    assert len(result.trials) == 2 and result.version == "1"
    assert {"learning_rate", "dropout"} <= set(result.best_config)


def test_concurrency_is_capped_to_what_the_cluster_holds(ray_cluster, tmp_path):
    resources, concurrent = trial_resources(settings(tmp_path, max_concurrent_trials=8))
    assert resources == {"cpu": 1.0} and concurrent == 2
    start = time.monotonic()
    with pytest.raises(ClusterCapacityError, match="3 CPU"):
        trial_resources(settings(tmp_path, cpus_per_trial=3))
    assert time.monotonic() - start < 5


def test_unknown_model_type_or_search_space_key_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown model type 'gru'"):
        build_param_space(settings(tmp_path, model_type="gru"))
    with pytest.raises(ValueError, match=r"unknown search-space key\(s\) \['hiden_size'\]"):
        build_param_space(settings(tmp_path, fixed={"hiden_size": 8}))
    with pytest.raises(ValueError, match=r"\['conv_channels'\].*'lstm'"):
        build_param_space(settings(tmp_path, search_space={"conv_channels": 8}))
    with pytest.raises(ValueError, match=r"\['cnn_filters'\].*'lstm'"):
        build_param_space(settings(tmp_path, search_space={"cnn_filters": 8}))
    assert build_param_space(settings(tmp_path, fixed={"hidden_size": 8}))["hidden_units"] == 8
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        run_sweep(settings(tmp_path, num_samples=0))


def test_an_unreachable_tracking_server_fails_before_any_training(tracking, tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(TrackingError, match="not reachable"):
            run_sweep(settings(tmp_path))
    finally:
        mlflow.set_tracking_uri(tracking)
    assert not (tmp_path / "ray_results").exists()  # no trial ever started


def test_cli_help_and_mlproject_entry():
    proc = subprocess.run(
        [sys.executable, "-m", "training.tune", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    for flag in ("--num-samples", "--max-concurrent-trials", "--cpus-per-trial", "--use-optuna"):
        assert flag in proc.stdout
    from mlflow.projects._project_spec import load_project

    entry = load_project(str(ROOT)).get_entry_point("tune")
    command = entry.compute_command(
        {"model_type": "lstm", "num_samples": "3", "use_optuna": "true"}, storage_dir=None
    )
    assert command.startswith("python -m training.tune") and "--num-samples 3" in command
    assert "--use-optuna true" in command
