"""Tools for the fault tests (test_faults.py): an `mlflow server` that can be stopped and
started again on its port, stalled uploads, the processes of a Serve app's replicas."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import requests

MLFLOW = Path(sys.executable).with_name("mlflow")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uptime() -> str:
    return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


class RegistryServer:
    """`mlflow server` over a SQLite store on a fixed port, stopped and started at will."""

    def __init__(self, db: Path, log: Path) -> None:
        self.db, self.log, self.port = db, log, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job workers
        command = [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{self.db}"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"mlflow server not up after {timeout_s} s: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the CLI and its uvicorn worker
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


def stalled_upload(
    port: int, path: str, headers: dict, body: bytes, fraction: float
) -> socket.socket:
    """A POST that announces the whole body but sends only `fraction` of it, then stalls."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    )
    sock.sendall(head.encode() + body[: int(len(body) * fraction)])
    return sock


def read_until_closed(sock: socket.socket, start: float, out: list) -> None:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError as exc:
        data += f"\n{exc!r}".encode()
    out.append((time.perf_counter() - start, data))
    sock.close()


def timed(call) -> tuple[requests.Response, float]:
    start = time.perf_counter()
    response = call()
    return response, time.perf_counter() - start


def wait_for(check, timeout_s: float) -> float:
    """Seconds until check() is true (polled), or fail after timeout_s."""
    start = time.perf_counter()
    while not check():
        assert time.perf_counter() - start < timeout_s, f"not within {timeout_s} s"
        time.sleep(0.3)
    return time.perf_counter() - start


def replica_pids(app: str, deployment: str) -> list[int]:
    """Processes of the `deployment` replicas of Serve app `app`: descendants of this process
    (the local Ray instance it started), found by their process title."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append((int(entry.name), title))
    found, todo = [], [os.getpid()]
    while todo:
        for pid, title in children.get(todo.pop(), []):
            todo.append(pid)
            if f"ServeReplica:{app}:{deployment}" in title:
                found.append(pid)
    return found
