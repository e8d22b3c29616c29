"""The MLproject entry points end to end through `mlflow run`, and the guide's MLflow examples as
printed: both `mlflow run . -e train` forms (with and without an experiment name), the deploy
promote command, `mlflow.pyfunc.load_model("models:/lstm_price_forecast/latest")` and the
registry listing. One command runs verbatim without --env-manager: MLflow builds the
python_env.yaml virtualenv (slow the first time, cached under ~/.mlflow/envs after)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.conftest import isolated_tracking
from training.data import load_data
from training.registry import resolve_version

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow

# The guide's commands, as printed (the shell's line continuations joined).
GUIDE_TRAIN = (
    "mlflow run . -e train --experiment-name lstm_forecasting -P model_name=lstm_price_forecast "
    "-P symbol=BTC/USDT -P sequence_length=60 -P epochs=100 -P learning_rate=0.001"
).split()
GUIDE_TRAIN_CSV = "mlflow run . -e train -P data_path={csv} -P interval=1h -P days_back=90".split()
GUIDE_PROMOTE = (
    "mlflow run . -e deploy -P model_uri=runs:/{run_id}/model -P model_name=lstm_price_forecast "
    "-P stage=production -P action=promote"
).split()
LOCAL = ["--env-manager", "local"]  # the fast path: this process's environment


def run_cli(argv: list[str], uri: str, timeout: float = 300, **extra_env: str) -> str:
    """Run `mlflow ...` from the project root against the store `uri`; returns its output."""
    # A run or experiment chosen by an earlier test in this process must not leak into mlflow run.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")
    }
    env["MLFLOW_TRACKING_URI"] = uri
    env.update(extra_env)
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    cmd = [str(BIN / "mlflow"), *argv[1:]]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def mlflow_run(entry: str, params: dict, uri: str, experiment: str | None = None) -> str:
    cmd = ["mlflow", "run", ".", "-e", entry, *LOCAL]
    if experiment:
        cmd += ["--experiment-name", experiment]
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    return run_cli(cmd, uri)


def runs_of(experiment: str):
    return mlflow.search_runs(experiment_names=[experiment])


@pytest.mark.parametrize("experiment", ["my_experiment"])
def test_train_then_deploy_entries(tracking, experiment):
    """The train entry with its defaults (the bundled sample) into any --experiment-name, not
    only the entry's own default, then the deploy entry's promote. A CSV file is the guide
    test's; rollback and list go through the same `deploy` module in test_registry."""
    params = {"model_name": "mlp_lstm", "sequence_length": 24, "epochs": 2, "days_back": 45}
    mlflow_run("train", params, tracking, experiment=experiment)
    runs = runs_of(experiment)
    assert len(runs) == 1 and runs["status"][0] == "FINISHED"
    assert "metrics.test_interval_coverage" in runs
    # the entry's defaults: the bundled sample, its symbol resolved from the entry's ""
    assert runs["tags.resolved.symbols"][0] == "BTC/USDT"
    assert runs["tags.mlflow.runName"][0] == "lstm_BTCUSDT_1h"  # renamed from MLflow's
    v1 = resolve_version("mlp_lstm", "latest")
    assert v1.run_id == runs["run_id"][0]
    mlflow_run(
        "deploy",
        {
            "model_uri": f"runs:/{v1.run_id}/model",
            "model_name": "mlp_lstm",
            "stage": "production",
            "action": "promote",
        },
        tracking,
    )
    assert str(resolve_version("mlp_lstm", "production").version) == "1"


def test_guide_csv_form_without_experiment_name_then_promote_load_and_list(tracking, tmp_path):
    """The guide's second `mlflow run -e train` form (no --experiment-name: MLflow's default
    experiment, which the entry must not replace), then its promote command, direct loading
    and the registry listing. Only `-P epochs=2` is added: 100 epochs are the guide's default."""
    csv = tmp_path / "data.csv"
    load_data("BTC/USDT", data_path="sample", days_back=120).to_csv(csv)
    command = [a.format(csv=csv) for a in GUIDE_TRAIN_CSV]
    run_cli([*command[:5], *LOCAL, *command[5:], "-P", "epochs=2"], tracking)
    runs = runs_of("Default")  # the deploy runs of other tests land there too
    runs = runs[runs["tags.mlflow.project.entryPoint"] == "train"].reset_index()
    assert len(runs) == 1 and runs["status"][0] == "FINISHED"
    assert runs["params.data_source"][0] == str(csv) and runs["params.days_back"][0] == "90"
    run_id = runs["run_id"][0]
    version = resolve_version("lstm_price_forecast", "latest")
    assert version.run_id == run_id

    promote = [a.format(run_id=run_id) for a in GUIDE_PROMOTE]
    run_cli([*promote[:5], *LOCAL, *promote[5:]], tracking)
    assert resolve_version("lstm_price_forecast", "production").version == version.version

    # Direct Model Loading, as printed; `sequences` are windows of raw candles
    model_uri = "models:/lstm_price_forecast/latest"
    model = mlflow.pyfunc.load_model(model_uri)
    bars = load_data("BTC/USDT", data_path=str(csv), days_back=10)
    sequences = [bars.to_numpy()[-60:].tolist()]
    prediction = model.predict(sequences)
    assert list(prediction.columns) == ["prediction", "predicted_return", "lower", "upper"]
    assert len(prediction) == 1

    # Listing Models and Model Not Found, as printed
    client = mlflow.tracking.MlflowClient()
    models = client.search_registered_models()
    for model in models:
        print(f"Model: {model.name}")
        print(f"Latest Version: {model.latest_versions[0].version}")
    latest = {m.name: m.latest_versions[0].version for m in models}
    assert latest["lstm_price_forecast"] == version.version
    models = client.search_registered_models(filter_string="name='lstm_price_forecast'")
    assert len(models) == 1


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


@pytest.mark.timeout(3600)
@pytest.mark.skipif(shutil.which("pyenv") is None, reason="MLflow's virtualenv manager needs pyenv")
def test_guide_command_verbatim_builds_the_python_env(tmp_path):
    """The guide's first command exactly as printed: no --env-manager, so MLflow builds (or
    reuses) the python_env.yaml virtualenv with pip, then trains 100 epochs at most (early
    stopping ends it sooner). The command stays verbatim; only the "sample" it trains on is
    40 days of the bundled candles instead of a year (MLTRADE_SAMPLE_DIR), to keep it short."""
    samples = tmp_path / "samples"
    samples.mkdir()
    bars = load_data("BTC/USDT", data_path="sample", days_back=40)
    bars.to_csv(samples / "BTCUSDT_1h.csv.gz", index_label="timestamp")
    with isolated_tracking(tmp_path) as uri:
        out = run_cli(GUIDE_TRAIN, uri, timeout=3300, MLTRADE_SAMPLE_DIR=str(samples))
        runs = runs_of("lstm_forecasting")
        assert len(runs) == 1 and runs["status"][0] == "FINISHED"
        assert runs["tags.mlflow.project.env"][0] == "virtualenv"
        assert runs["params.epochs"][0] == "100"
        assert resolve_version("lstm_price_forecast", "latest").run_id == runs["run_id"][0]
    assert "Traceback" not in out
