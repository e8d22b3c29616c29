"""Processes the tests start themselves (`ray start`, `mlflow server`, the launcher): free
ports, waiting for a URL to answer, and stopping exactly what a test started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


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
