"""The MLproject `train` and `deploy` entry points, end to end through `mlflow run`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from training.registry import resolve_version

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def mlflow_run(entry: str, params: dict, uri: str, experiment: str | None = None) -> str:
    # A run or experiment chosen by an earlier test in this process must not leak into mlflow run.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")
    }
    env["MLFLOW_TRACKING_URI"] = uri
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "run",
        ".",
        "-e",
        entry,
        "--env-manager",
        "local",
    ]
    if experiment:
        cmd += ["--experiment-name", experiment]
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_train_then_deploy_entries(tracking):
    train_params = {
        "model_name": "mlp_lstm",
        "model_type": "lstm",
        "symbol": "BTC/USDT",
        "sequence_length": 24,
        "epochs": 2,
        "learning_rate": 0.001,
        "data_path": ROOT / "data/ohlcv/BTCUSDT_1h.csv.gz",
        "interval": "1h",
        "days_back": 45,
    }
    defaults = {
        k: train_params[k] for k in ("model_name", "sequence_length", "epochs", "days_back")
    }
    mlflow_run("train", defaults, tracking, experiment="lstm_forecasting")  # bundled sample
    mlflow_run("train", train_params, tracking, experiment="lstm_forecasting")  # a CSV file
    v1 = resolve_version("mlp_lstm", 1)
    runs = mlflow.search_runs(experiment_names=["lstm_forecasting"])
    assert len(runs) == 2 and "metrics.test_interval_coverage" in runs
    assert set(runs["tags.resolved.symbols"].dropna()) == {"BTC/USDT"}  # the entry's default ""
    uri1 = f"runs:/{v1.run_id}/model"
    mlflow_run(
        "deploy",
        {"model_uri": uri1, "model_name": "mlp_lstm", "stage": "production", "action": "promote"},
        tracking,
    )
    assert str(resolve_version("mlp_lstm", "production").version) == "1"
    v2 = resolve_version("mlp_lstm", 2)
    mlflow_run(
        "deploy",
        {
            "model_uri": f"runs:/{v2.run_id}/model",
            "model_name": "mlp_lstm",
            "stage": "production",
            "action": "promote",
        },
        tracking,
    )
    assert str(resolve_version("mlp_lstm", "production").version) == "2"
    mlflow_run(
        "deploy", {"model_name": "mlp_lstm", "stage": "production", "action": "rollback"}, tracking
    )
    assert str(resolve_version("mlp_lstm", "production").version) == "1"
    out = mlflow_run("deploy", {"model_name": "mlp_lstm", "action": "list"}, tracking)
    assert '"production"' in out and "interval_coverage" in out


def test_train_help_lists_model_types():
    proc = subprocess.run(
        [sys.executable, "-m", "training.train", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    assert "{cnn_lstm,lstm,transformer}" in proc.stdout
