"""Ray jobs on a local head node train and sweep through an MLflow tracking server.

Starts its own `mlflow server` (SQLite backend) and `ray start --head --block` on free ports with
a private temp dir, so it never touches another Ray instance on the machine, submits
`python -m training.train --num-workers 2` and `python -m training.tune` with
`ray job submit --working-dir .`, and checks the runs and registered models in MLflow. Stops only
the processes it started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from training.data import load_data

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# what never belongs in a job's upload, in case .gitignore is missing or ignored
JOB_EXCLUDES = [".git", ".venv", "mlruns", "mlartifacts", "mlflow.db*", "ray_results", "data/cache"]
# A loopback-only head that lives for this module: no token, so the test does not depend on
# ~/.ray/auth_token (Ray 2.60 turns token auth on when that file exists; see the README).
AUTH = {"RAY_AUTH_MODE": "disabled"}
pytestmark = pytest.mark.slow


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_for(url: str, proc: subprocess.Popen, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (the Ray dashboard wants its auth token)
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{what} did not answer at {url} within {timeout}s")


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line), read from /proc (Linux)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out[int(entry.name)] = (ppid, cmdline)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def stop_tree(proc: subprocess.Popen, marker: str | None = None, grace: float = 5) -> None:
    """SIGTERM the process we started, its descendants and whatever still runs from our private
    temp dir (`marker`); SIGKILL what is left after `grace` s. Nothing else is touched."""
    table = _processes()
    mine, frontier = {proc.pid}, [proc.pid]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in table.items():
            if ppid == parent and pid not in mine:
                mine.add(pid)
                frontier.append(pid)
    if marker:
        mine |= {pid for pid, (_, cmd) in table.items() if marker in cmd and pid != os.getpid()}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in mine:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(pid) for pid in mine):
            proc.poll()  # reap our direct child
            time.sleep(0.2)


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
        env=dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}"),
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{uri}/health", proc, "mlflow server")
        yield uri
    finally:
        stop_tree(proc)


@pytest.fixture(scope="module")
def ray_head():
    """A private head node: its own temp dir (short, for Unix socket paths) and ports."""
    temp_dir = tempfile.mkdtemp(prefix="rjob", dir="/tmp")
    gcs, dash, client, agent, agent_grpc, metrics, env_agent = free_ports(7)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    # Ray's state API inside workers finds the cluster from RAY_ADDRESS; without it, another Ray
    # instance on the machine could be picked
    env["RAY_ADDRESS"] = f"127.0.0.1:{gcs}"
    env.update(AUTH)
    proc = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            "--num-cpus=2",
            "--num-gpus=0",
            f"--temp-dir={temp_dir}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--ray-client-server-port={client}",
            f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--metrics-export-port={metrics}",
            f"--runtime-env-agent-port={env_agent}",
            "--disable-usage-stats",
        ],
        stdout=open(Path(temp_dir) / "start.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        env=env,
    )
    address = f"http://127.0.0.1:{dash}"
    try:
        wait_for(f"{address}/api/version", proc, "ray head (dashboard)")
        yield address
    finally:
        stop_tree(proc, marker=temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit(address: str, tracking_uri: str, args: list[str]) -> tuple[int, str]:
    """`ray job submit` (waits for the job); returns its exit code and output."""
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": tracking_uri}, "excludes": JOB_EXCLUDES}
    cmd = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--address",
        address,
        "--working-dir",
        str(ROOT),
        "--runtime-env-json",
        json.dumps(runtime_env),
        "--",
        "python",
        *args,
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | AUTH
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    return proc.returncode, proc.stdout + proc.stderr


def test_job_trains_on_the_head_and_registers_in_mlflow(ray_head, mlflow_server):
    code, out = submit(
        ray_head,
        mlflow_server,
        [
            "-m",
            "training.train",
            "--days-back=60",
            "--epochs=2",
            "--sequence-length=32",
            "--param=hidden_size=16",
            "--model-name=job_lstm",
            "--experiment-name=ray_jobs",
            "--num-workers=2",
        ],
    )
    assert code == 0 and "succeeded" in out, out[-4000:]
    assert "registered=job_lstm version=1" in out
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


def test_a_sweep_job_records_nested_runs_and_registers_the_best(ray_head, mlflow_server):
    code, out = submit(
        ray_head,
        mlflow_server,
        [
            "-m",
            "training.tune",
            "--days-back=60",
            "--num-samples=2",
            "--max-concurrent-trials=2",
            "--epochs=2",
            "--param=hidden_size=16",
            "--param=num_layers=1",
            "--param=sequence_length=32",
            "--model-name=job_tuned",
            "--experiment-name=ray_jobs_tune",
        ],
    )
    assert code == 0 and "succeeded" in out, out[-4000:]
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("ray_jobs_tune")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and parent.data.params["sweep.num_samples"] == "2"
    (version,) = client.search_model_versions("name='job_tuned'")
    assert version.run_id == parent.data.tags["best_run_id"]
