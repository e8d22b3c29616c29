"""Headless Chromium for the browser checks (the /docs page, the HTML reports).

Debian's `chromium` package; `make test` installs it when it is missing and apt-get is there.
The flags keep Chromium off the network it would otherwise call at every start (updates, sync,
Google's hosts): on a closed network those calls fail many at a time and slow the page down.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def chromium() -> str:
    """The Chromium binary; fails the test (not skips it) when there is none."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("no chromium on PATH: `apt-get install chromium` (make test does it as root)")
    return found


def _run(url: str, *extra: str, budget_ms: int, timeout_s: float) -> str:
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                chromium(),
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}",
                *extra,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    if done.returncode != 0:
        raise AssertionError(f"chromium failed on {url}: {done.stderr[-2000:]}")
    return done.stdout


def dump_dom(url: str, budget_ms: int = 10_000, timeout_s: float = 90) -> str:
    """The page's DOM after its scripts ran for `budget_ms` of virtual time."""
    return _run(url, "--dump-dom", budget_ms=budget_ms, timeout_s=timeout_s)


def screenshot(url: str, path: Path, size: str = "1280,900", budget_ms: int = 10_000) -> Path:
    """A PNG of the rendered page (for the docs)."""
    _run(url, f"--screenshot={path}", f"--window-size={size}", budget_ms=budget_ms, timeout_s=90)
    return path
