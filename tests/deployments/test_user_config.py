"""The service on real processes (issue 13): `serve deploy` of serve_config.yaml onto a
`ray start --head` cluster, edits that would take the model away refused while the service keeps
answering on the previous model, /docs rendered offline in headless Chromium from that app, and
the launcher (`mltrade serve`) stopped by SIGTERM without errors or leftover Ray processes.

The cluster gets free ports, a short private temp dir and no auth token; every process it starts
carries a marker in its environment, so the teardown stops exactly those. One tiny LSTM is
registered twice (v1 and v2, the same weights) in a throwaway MLflow store, which the cluster
and the launcher see through MLFLOW_TRACKING_URI.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import mlflow
import pytest
import yaml

from deployments.app import AppArgs, build_app
from deployments.sentiment import ScorerSettings
from deployments.settings import ConfigRefused, ModelSettings, parse_model_settings
from tests.browser import dump_dom, screenshot
from tests.conftest import isolated_tracking
from tests.procs import free_ports
from training.data import PROJECT_ROOT, load_data
from training.experiment import train_model
from training.models.lstm import LSTMModelConfig
from training.specs import DataSpec, TrainSettings

NAME = "user_config_lstm"
SEQ = 32
PREFIX = "/mltrade"  # a route prefix: the docs page and its assets must work below one
PREDICT, HEALTH = f"{PREFIX}/api/v1/ml/predict", f"{PREFIX}/api/v1/health"
BIN = Path(sys.executable).parent
MARKER_ENV = "MLTRADE_TEST_PROCESS_MARKER"
DOCS_IMAGE = PROJECT_ROOT / "docs" / "img" / "swagger.png"
UPDATE_IMAGES_ENV = "MLTRADE_UPDATE_DOCS_IMAGES"  # =1: the docs test rewrites DOCS_IMAGE
DEPLOY_TIMEOUT_S = 240
# The first test also pays for the store and the cluster (a minute or two on a busy 2-core box)
pytestmark = pytest.mark.timeout(600)


def marked(marker: str) -> list[int]:
    """Live processes whose environment holds `marker` (inherited by all that Ray starts)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def stop_marked(marker: str, grace_s: float = 5) -> None:
    """SIGTERM, then SIGKILL after `grace_s`, every process carrying `marker`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in marked(marker):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace_s
        while marked(marker) and time.monotonic() < deadline:
            time.sleep(0.2)


def process_env(uri: str, marker: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=str(PROJECT_ROOT),  # Ray workers import this tree
        MLFLOW_TRACKING_URI=uri,
        RAY_AUTH_MODE="disabled",  # loopback only; no dependence on ~/.ray/auth_token
        **{MARKER_ENV: marker},
        **extra,
    )
    return env


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The tracking URI of a store holding NAME v1 and v2 (one training run)."""
    tmp = tmp_path_factory.mktemp("user_config")
    with isolated_tracking(tmp) as uri:
        mlflow.create_experiment("user_config", artifact_location=(tmp / "artifacts").as_uri())
        train_model(
            TrainSettings(
                data=DataSpec(days_back=60),
                config=LSTMModelConfig(epochs=1, sequence_length=SEQ, hidden_units=16, seed=1),
                model_name=NAME,
                experiment_name="user_config",
            )
        )
        client = mlflow.MlflowClient()
        first = client.get_model_version(NAME, "1")
        client.create_model_version(NAME, first.source, run_id=first.run_id)
        yield uri


@pytest.fixture(scope="module")
def window() -> list:
    bars = load_data("BTC/USDT", days_back=10, data_path="sample")
    return bars[["open", "high", "low", "close", "volume"]].to_numpy()[:SEQ].tolist()


@pytest.mark.parametrize(("given", "stored"), [(1, "1"), ("2", "2"), (" 3 ", "3"), ("a", "a")])
def test_versions_are_numbers_or_strings(given, stored):
    assert ModelSettings(default_version=given).default_version == stored
    assert AppArgs.model_validate({"default_version": given}).default_version == stored
    assert ScorerSettings(model_version=given).model_version == stored


@pytest.mark.parametrize("given", [0, -1, "0", "²", True, 1.5, "", None])
def test_versions_that_are_no_version_are_named(store, given):
    with pytest.raises(ConfigRefused) as refused:
        parse_model_settings({"model_name": NAME, "default_version": given}, store)
    message = str(refused.value)
    assert message.startswith("user_config refused: default_version: ")
    assert message.endswith(f"model {NAME!r} has versions [1, 2], aliases [], or 'latest'")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"default_version": "production"}, "default_version 'production' refused: model "),
        ({"default_version": 3}, "has no version or alias '3'; versions [1, 2], aliases []"),
        ({"model_name": "nope"}, "model_name 'nope' refused: no registered model 'nope'"),
        ({"max_batch_size": 0}, "args refused: max_batch_size: Input should be greater"),
        ({"max_replica": 2}, "args refused: max_replica: Extra inputs are not permitted"),
    ],
)
def test_build_app_refuses_what_would_leave_no_model(store, args, message):
    with pytest.raises(ConfigRefused) as refused:
        build_app({"model_name": NAME, "tracking_uri": store, "with_sentiment": False, **args})
    assert message in str(refused.value)


class Cluster:
    """A `ray start --head --block` on free ports with `serve deploy` / `serve status` on it."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.temp_dir = tempfile.mkdtemp(prefix="rsrv", dir="/tmp")  # short: socket paths
        self.marker = uuid.uuid4().hex
        self.env = process_env(uri, self.marker)
        gcs, dash, client, agent, agent_grpc, metrics, env_agent, self.port = free_ports(8)
        self.proc = subprocess.Popen(
            [
                str(BIN / "ray"),
                "start",
                "--head",
                "--block",
                "--node-ip-address=127.0.0.1",
                f"--port={gcs}",
                "--num-cpus=2",
                "--num-gpus=0",
                f"--temp-dir={self.temp_dir}",
                "--include-dashboard=true",  # serve deploy talks to the dashboard
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dash}",
                f"--ray-client-server-port={client}",
                f"--dashboard-agent-listen-port={agent}",
                f"--dashboard-agent-grpc-port={agent_grpc}",
                f"--metrics-export-port={metrics}",
                f"--runtime-env-agent-port={env_agent}",
                "--disable-usage-stats",
            ],
            stdout=open(Path(self.temp_dir) / "start.log", "w"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=PROJECT_ROOT,
        )
        self.address = f"http://127.0.0.1:{dash}"
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)

    def wait_up(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (Path(self.temp_dir) / "start.log").read_text()
                raise RuntimeError(f"ray start exited with {self.proc.returncode}: {log[-3000:]}")
            try:
                httpx.get(f"{self.address}/api/version", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.5)
        raise TimeoutError(f"the Ray dashboard did not answer within {timeout_s} s")

    def serve(self, *args: str) -> subprocess.CompletedProcess:
        """The `serve` CLI against this cluster."""
        return subprocess.run(
            [str(BIN / "serve"), *args, "-a", self.address],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=PROJECT_ROOT,
            timeout=120,
            check=False,
        )

    def deploy(self, text: str) -> None:
        path = Path(self.temp_dir) / "serve_config.yaml"
        path.write_text(text)
        done = self.serve("deploy", str(path))
        assert done.returncode == 0, done.stdout + done.stderr

    def app(self) -> dict:
        """The app's status as `serve status` reads it (the dashboard's REST API)."""
        body = httpx.get(f"{self.address}/api/serve/applications/", timeout=30).json()
        return body["applications"].get("mltrade", {})

    def wait_app(self, *statuses: str, timeout_s: float = DEPLOY_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            app = self.app()
            if app.get("status") in statuses:
                return app
            time.sleep(0.5)
        raise TimeoutError(f"app not {statuses} within {timeout_s} s: {app}")

    def health(self) -> dict:
        return self.http.get(HEALTH).json()

    def wait_health(self, check, timeout_s: float = 60) -> dict:
        """/health once `check(report)` holds (a user_config reaches replicas asynchronously)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            report = self.health()
            if check(report):
                return report
            time.sleep(0.5)
        raise TimeoutError(f"/health never satisfied the check: {report}")

    def stop(self) -> None:
        self.http.close()
        stop_marked(self.marker)  # `ray start` and everything the cluster started
        self.proc.wait(10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def config_text(port: int, uri: str, user_config: dict | None = None, **args) -> str:
    """serve_config.yaml pointed at the test store and port, as YAML text: `default_version: 1`
    comes out unquoted, as a user writes it."""
    config = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    config.pop("proxy_location", None)
    app = config["applications"][0]
    app["route_prefix"] = PREFIX
    app["args"].update(
        model_name=NAME,
        tracking_uri=uri,
        model_num_cpus=0.25,
        ingress_num_cpus=0.1,
        max_replicas=1,
        with_sentiment=False,
        **args,
    )
    app["deployments"][0]["user_config"].update(model_name=NAME, **(user_config or {}))
    return yaml.safe_dump(config, sort_keys=False)


@pytest.fixture(scope="module")
def cluster(store):
    """The cluster with the app deployed from serve_config.yaml as it is (latest: v2)."""
    cluster = Cluster(store)
    try:
        cluster.wait_up()
        cluster.deploy(config_text(cluster.port, store))
        cluster.wait_app("RUNNING")
        yield cluster
    finally:
        cluster.stop()


def served_version(cluster: Cluster, window: list) -> int:
    r = cluster.http.post(PREDICT, json={"sequences": [window]})
    assert r.status_code == 200, r.text
    return r.json()["model_version"]


def test_docs_page_renders_offline_in_chromium(cluster, tmp_path):
    base = f"{cluster.http.base_url}{PREFIX}"
    for page in ("/docs", "/redoc"):
        html = cluster.http.get(f"{PREFIX}{page}").text
        assert not re.findall(r"https?://", html), f"{page} refers off-host:\n{html}"
        for asset in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert cluster.http.get(asset).status_code == 200, asset
    dom = dump_dom(f"{base}/docs")
    # operations rendered by Swagger UI, not just named in a script: it fetched the schema
    # through the route prefix and built the page from it
    for path in ("/api/v1/ml/predict", "/api/v1/ml/signal", "/api/v1/health"):
        assert f'data-path="{path}"' in dom, dom[-3000:]
    assert "opblock-summary-method" in dom and "Authorize" in dom
    assert not re.findall(r'(?:src|href)="https?://(?!127\.0\.0\.1)', dom)
    shot = screenshot(f"{base}/docs", tmp_path / "swagger.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    if os.environ.get(UPDATE_IMAGES_ENV) == "1":
        shutil.copyfile(shot, DOCS_IMAGE)


def test_version_number_unquoted_in_yaml_is_served(cluster, window):
    """`default_version: 1` (a YAML number) reaches the running replica through reconfigure."""
    text = config_text(cluster.port, cluster.uri, {"default_version": 1})
    assert "default_version: 1\n" in text
    before = cluster.health()["replica"]
    cluster.deploy(text)
    after = cluster.wait_health(lambda h: h["default_model"]["resolved_version"] == 1)
    assert served_version(cluster, window) == 1
    assert after["replica"] == before and after["user_config_refused"] is None


@pytest.mark.parametrize(
    ("user_config", "fragments"),
    [
        (
            {"default_version": "production"},
            ["default_version 'production' refused", "versions [1, 2], aliases []"],
        ),
        (
            {"max_batch_size": 0, "batch_size": 8},
            ["max_batch_size: Input should be greater than or equal to 1", "batch_size: Extra"],
        ),
    ],
    ids=["unknown alias", "invalid fields"],
)
def test_bad_user_config_is_refused_and_the_model_keeps_serving(
    cluster, window, user_config, fragments
):
    """The running replica refuses it (raising would make Serve stop the replica: measured, the
    app goes DEPLOY_FAILED and answers 503 until a good deploy) and says why in /health."""
    before = cluster.health()
    version = served_version(cluster, window)
    cluster.deploy(config_text(cluster.port, cluster.uri, user_config))
    report = cluster.wait_health(
        lambda h: fragments[0] in (h["user_config_refused"] or ""), timeout_s=60
    )
    for fragment in fragments:
        assert fragment in report["user_config_refused"], report
    assert report["ready"] and report["replica"] == before["replica"]
    assert report["default_model"] == before["default_model"]
    assert served_version(cluster, window) == version
    assert cluster.http.get(HEALTH).status_code == 200


def test_bad_args_fail_the_deploy_and_the_running_app_keeps_serving(cluster, window):
    """Builder args are checked when Serve builds the app: `serve status` shows DEPLOY_FAILED
    with the message and the replicas already running keep answering. Last of the cluster
    tests: the app stays DEPLOY_FAILED (a good deploy would rebuild it, half a minute here)."""
    version = served_version(cluster, window)
    cluster.deploy(config_text(cluster.port, cluster.uri, default_version="production"))
    app = cluster.wait_app("DEPLOY_FAILED")
    assert "default_version 'production' refused" in app["message"], app["message"]
    assert "versions [1, 2], aliases []" in app["message"]
    assert "Traceback" not in app["message"]  # refused at once, not retried as a crash
    status = cluster.serve("status")
    assert "DEPLOY_FAILED" in status.stdout and "'production' refused" in status.stdout
    assert served_version(cluster, window) == version
    assert cluster.health()["ready"]


def test_sigterm_stops_the_launcher_cleanly(store, tmp_path):
    """`mltrade serve`'s launcher on its own Ray: SIGTERM once it serves -> exit 0 within a
    bound, no traceback, no failed `graceful_shutdown` task, no Ray process left behind."""
    (port,) = free_ports(1)
    marker = uuid.uuid4().hex
    ray_tmp = tempfile.mkdtemp(prefix="rlch", dir="/tmp")  # no `ray start` address file here
    code = (
        "from deployments.launcher import ServeSettings, serve_app; "
        f"serve_app(ServeSettings(port={port}, model_name={NAME!r}, with_sentiment=False, "
        f"request_file={str(tmp_path / 'request.json')!r}))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=process_env(store, marker, RAY_TMPDIR=ray_tmp),
        cwd=tmp_path,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + DEPLOY_TIMEOUT_S
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C to stop." in line or time.monotonic() > deadline:
                break
        assert "Ctrl-C to stop." in lines[-1], "".join(lines)[-4000:]
        r = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=60)
        assert r.status_code == 200, r.text
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
        stopped_s = time.monotonic() - start
        output = "".join(lines) + rest
        assert proc.returncode == 0, output[-4000:]
        assert stopped_s < 30, f"{stopped_s:.0f} s to stop"
        assert "Stopped." in rest
        for bad in ("Traceback", "graceful_shutdown", "ERROR"):
            assert bad not in output, output[-4000:]
        time.sleep(1)  # Ray's last processes exit right after the driver
        assert not marked(marker), "Ray processes left behind"
    finally:
        if proc.poll() is None:
            proc.kill()
        stop_marked(marker)
        shutil.rmtree(ray_tmp, ignore_errors=True)
