"""A local two-node Ray cluster for the tests of this package, started once and stopped by PID.

`ray start --head` and a second `ray start --address` on this machine, each with one CPU, a
custom resource naming it (`head_node`, `second_node`), its own temp dir and its own ports
(GCS, dashboard and its agents, node manager, object manager, client server, metrics, workers),
so it never meets another Ray instance here. Both export PYTHONPATH (this checkout) and
MLFLOW_TRACKING_URI (a throwaway SQLite store, which this process uses too). At the end every
process started from the two `ray start` commands is stopped by PID; nothing else is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import isolated_tracking
from tests.procs import free_ports, stop_tree

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKER_PORTS = 24  # per node: prestarted workers, tasks, Train workers, Serve, the job's driver
# A loopback-only cluster that lives for this package: no token (Ray 2.60 turns token auth on
# when ~/.ray/auth_token exists), in the nodes and in this process alike.
AUTH = {"RAY_AUTH_MODE": "disabled"}


@dataclass(frozen=True)
class TwoNodes:
    """The running cluster: where to reach it and which node is which."""

    gcs: str  # host:port, for ray.init(address=...)
    dashboard: str  # http://host:port, for `ray job submit` and the state API
    head_id: str
    second_id: str
    tracking_uri: str

    @property
    def node_ids(self) -> set[str]:
        return {self.head_id, self.second_id}


def _node_ports() -> list[str]:
    """The ports every node binds, all free a moment ago."""
    names = (
        "node-manager-port",
        "object-manager-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "metrics-export-port",
        "runtime-env-agent-port",
    )
    ports = free_ports(len(names) + WORKER_PORTS)
    workers = ",".join(map(str, ports[len(names) :]))
    return [f"--{n}={p}" for n, p in zip(names, ports, strict=False)] + [
        f"--worker-port-list={workers}"
    ]


def _ray_start(args: list[str], temp_dir: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--block",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            "--num-gpus=0",
            "--object-store-memory=200000000",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
            *_node_ports(),
            *args,
        ],
        stdout=open(Path(temp_dir) / "start.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        env=env,
    )


def _start_node(args: list[str], env: dict, started: list, attempts: int = 2) -> None:
    """Start a node and wait until `ray start` says it runs; appends (process, temp dir) to
    `started`. Ray gives a raylet 30 s to register, which a loaded machine can miss: then once
    more, on fresh ports."""
    for attempt in range(attempts):
        temp_dir = tempfile.mkdtemp(prefix="rc2", dir="/tmp")  # short: Unix socket paths
        proc = _ray_start(args, temp_dir, env)
        started.append((proc, temp_dir))
        log = Path(temp_dir) / "start.log"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if "Ray runtime started" in log.read_text():
                return
            if proc.poll() is not None:
                break
            time.sleep(0.5)
        if attempt == attempts - 1:
            raise RuntimeError(f"`ray start` did not start a node: {log.read_text()[-3000:]}")
        stop_tree(proc, marker=temp_dir)


def _connect(gcs: str, count: int, attempts: int = 3) -> list[dict]:
    """ray.init on the cluster (again when its GCS answers too slowly under load), then wait
    for `count` live nodes."""
    import ray

    for attempt in range(attempts):
        try:
            ray.init(address=gcs, log_to_driver=False)
            break
        except ConnectionError:
            if attempt == attempts - 1:
                raise
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        if len(nodes) >= count:
            return nodes
        time.sleep(0.5)
    raise TimeoutError(f"{count} Ray nodes did not join within 60s")


def _role(node: dict) -> str:
    return "head_node" if "head_node" in node["Resources"] else "second_node"


@pytest.fixture(scope="package")
def two_nodes(tmp_path_factory) -> Iterator[TwoNodes]:
    """The cluster, with this process connected to it (ray.init) and MLflow on its store."""
    import ray

    gcs_port, dashboard_port, client_port = free_ports(3)
    gcs = f"127.0.0.1:{gcs_port}"
    store = tmp_path_factory.mktemp("cluster_mlflow")
    started: list[tuple[subprocess.Popen, str]] = []
    with isolated_tracking(store, **AUTH) as uri:
        env = dict(
            os.environ,
            PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            MLFLOW_TRACKING_URI=uri,
            RAY_ADDRESS=gcs,  # Ray's state API inside workers must not find another instance
        )
        head = [
            "--head",
            f"--port={gcs_port}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            f"--ray-client-server-port={client_port}",
            f"--resources={json.dumps({'head_node': 1})}",
        ]
        try:
            _start_node(head, env, started)
            second = [f"--address={gcs}", f"--resources={json.dumps({'second_node': 1})}"]
            _start_node(second, env, started)
            try:
                ids = {_role(n): n["NodeID"] for n in _connect(gcs, 2)}
                dashboard = f"http://127.0.0.1:{dashboard_port}"
                yield TwoNodes(gcs, dashboard, ids["head_node"], ids["second_node"], uri)
            finally:
                ray.shutdown()
        finally:
            for proc, temp_dir in reversed(started):
                stop_tree(proc, marker=temp_dir)
                shutil.rmtree(temp_dir, ignore_errors=True)
