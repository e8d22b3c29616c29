"""Ray jobs on the two-node cluster (see conftest.py) train and sweep through an MLflow
tracking server, submitted the way a real cluster is used: `ray job submit --working-dir .`, so
the nodes run the shipped code, not this checkout. Starts its own `mlflow server` (SQLite
backend, artifact proxy) on a free port and stops only that."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from ray.util.state import list_actors

from tests.procs import free_ports, stop_tree, wait_for
from training.data import load_data

from .conftest import AUTH, BIN, ROOT, TwoNodes

# what never belongs in a job's upload, in case .gitignore is missing or ignored
JOB_EXCLUDES = [".git", ".venv", "mlruns", "mlartifacts", "mlflow.db*", "ray_results", "data/cache"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow_server")
    (port,) = free_ports(1)
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp / 'mlflow.db'}",
            "--artifacts-destination",
            str(tmp / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=open(tmp / "server.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        # no MLflow job workers (three huey consumers): these tests track and register only
        env=dict(
            os.environ,
            PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        ),
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{uri}/health", proc, "mlflow server")
        yield uri
    finally:
        stop_tree(proc)


def submit(cluster: TwoNodes, tracking_uri: str, command: str) -> str:
    """`ray job submit --working-dir <this checkout>` of a shell command (waits for the job);
    asserts that it succeeded and returns its output. The submitting process has no PYTHONPATH
    and runs from /, so only the shipped working dir can provide the code."""
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": tracking_uri}, "excludes": JOB_EXCLUDES}
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")} | AUTH
    proc = subprocess.run(
        [
            str(BIN / "ray"),
            "job",
            "submit",
            f"--address={cluster.dashboard}",
            f"--working-dir={ROOT}",
            f"--runtime-env-json={json.dumps(runtime_env)}",
            "--",
            "sh",
            "-c",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd="/",
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "succeeded" in out, out[-4000:]
    return out


def test_job_trains_on_the_cluster_from_the_shipped_code_and_registers_in_mlflow(
    two_nodes: TwoNodes, mlflow_server
):
    command = (
        "python -c 'import training; print(\"code from\", training.__file__)' && "
        "python -m training.train --days-back=60 --epochs=2 --sequence-length=32 "
        "--param=hidden_size=16 --model-name=job_lstm --experiment-name=ray_jobs --num-workers=2"
    )
    out = submit(two_nodes, mlflow_server, command)
    shipped = Path(out.split("code from ", 1)[1].split()[0])
    assert not shipped.is_relative_to(ROOT) and "runtime_resources" in str(shipped), shipped
    assert "registered=job_lstm version=1" in out
    # one Ray Train worker on each one-CPU node
    workers = list_actors(
        address=two_nodes.dashboard,
        filters=[("class_name", "=", "RayTrainWorker")],
        detail=True,
        limit=100,
    )
    assert {w["node_id"] for w in workers} == two_nodes.node_ids, workers
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("ray_jobs")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["num_workers"] == "2"
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) >= 1
    (version,) = client.search_model_versions("name='job_lstm'")
    assert version.run_id == run.info.run_id
    # the model's artifacts went through the server's artifact proxy and load back
    previous = mlflow.get_tracking_uri()
    try:
        mlflow.set_tracking_uri(mlflow_server)
        model = mlflow.pyfunc.load_model("models:/job_lstm/1")
    finally:
        mlflow.set_tracking_uri(previous)
    frame = load_data("BTC/USDT", data_path="sample", days_back=10)
    windows = frame.to_numpy()[-40:][None, -32:]
    pred = model.predict(windows)
    assert list(pred.columns) == ["prediction", "predicted_return", "lower", "upper"]
    assert np.all(pred["lower"] <= pred["prediction"]) and np.all(
        pred["prediction"] <= pred["upper"]
    )


def test_a_sweep_job_records_nested_runs_and_registers_the_best(two_nodes: TwoNodes, mlflow_server):
    command = (
        "python -m training.tune --days-back=60 --num-samples=2 --max-concurrent-trials=2 "
        "--epochs=2 --param=hidden_size=16 --param=num_layers=1 --param=sequence_length=32 "
        "--model-name=job_tuned --experiment-name=ray_jobs_tune"
    )
    submit(two_nodes, mlflow_server, command)
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("ray_jobs_tune")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and parent.data.params["sweep.num_samples"] == "2"
    (version,) = client.search_model_versions("name='job_tuned'")
    assert version.run_id == parent.data.tags["best_run_id"]
