"""The one place for Ray and device decisions: connecting, capacity, GPUs, devices, autoscaling.

Training, tuning, walk-forward and serving all ask here, so the same code runs unchanged on a
laptop, a CPU cluster or a GPU cluster: GPU use is decided from what the cluster reports.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Read by the Serve controller when a local instance starts. Ray's 5 s for a new HTTP proxy to
# answer is too short on a busy 2-core machine: the controller kills the proxy that is still
# importing, and `serve.start` then fails with ActorDiedError instead of waiting for the next.
RAY_ENV_DEFAULTS = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30"}
# Ray 2.60 turns token auth on for every new local instance (and wherever it finds a token) and
# then warns at each start that it did so by default: a warning the default itself causes.
TOKEN_AUTH_NOTICE = "Token authentication is enabled for this Ray cluster"


class ClusterCapacityError(RuntimeError):
    """Raised when the Ray cluster cannot place the requested workers, trials or tasks."""


def ensure_ray() -> None:
    """Connect to Ray if this process is not connected yet: RAY_ADDRESS (as set inside a Ray
    job), else a cluster started with `ray start` on this machine, else a new local instance."""
    import ray

    if not ray.is_initialized():
        for key, value in RAY_ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)
        quiet_token_auth_notice()
        ray.init(logging_level=logging.WARNING)


def quiet_token_auth_notice() -> None:
    """Drop Ray's notice that token auth is on by default (the mode stays as Ray sets it; its
    warning that auth is *off* still shows)."""
    notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
    notice.addFilter(_not_token_notice)  # the same filter twice is added once


def _not_token_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(TOKEN_AUTH_NOTICE)


def cluster_gpus() -> float:
    """GPUs the connected cluster reports; before `ray.init` (`serve run module:app` builds the
    app first, then starts Ray) the GPUs this machine's torch sees."""
    import ray

    if ray.is_initialized():
        return float(ray.cluster_resources().get("GPU", 0.0))
    import torch

    return float(torch.cuda.device_count())


def pick_device(device: str | None = None) -> torch.device:
    """The device asked for, else CUDA when present, else CPU."""
    import torch  # here: connecting to Ray (ensure_ray) should not wait for torch

    if device and device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def gpu_share(wanted: float) -> float:
    """`wanted` GPUs where the cluster has any, else 0: a CPU cluster never waits for a GPU."""
    return wanted if cluster_gpus() > 0 else 0.0


def free_cpus_per_unit(count: int, cap: float | None = None) -> float:
    """CPUs each of `count` units can have from what is free now (not the cluster's total, so
    training fits beside a live Serve app): at least 1, whole CPUs, at most `cap`."""
    import ray

    free = ray.available_resources().get("CPU", 0.0)
    share = max(1.0, math.floor(free / max(count, 1) + 1e-9))
    return min(share, cap) if cap else share


def task_slots(num_cpus: float, num_gpus: float = 0.0) -> int:
    """How many tasks of `num_cpus` CPUs and `num_gpus` GPUs the cluster's live nodes fit at
    once, counted per node (a task never spans nodes); at least 1, and no limit (sys.maxsize)
    for tasks that ask for neither."""
    import ray

    wanted = {key: amount for key, amount in (("CPU", num_cpus), ("GPU", num_gpus)) if amount > 0}
    if not wanted:
        return sys.maxsize
    slots = 0
    for node in ray.nodes():
        if node["Alive"]:
            have = node["Resources"]
            slots += min(math.floor(have.get(k, 0.0) / a + 1e-9) for k, a in wanted.items())
    return max(1, slots)


def check_capacity(count: int, per_unit: dict[str, float], what: str, timeout_s: float) -> None:
    """Fail fast when `count` units of `per_unit` resources can never be placed, and wait at most
    `timeout_s` for busy resources to free up; never leave the caller waiting forever.

    Raises:
        ClusterCapacityError: with what was asked, what the cluster has, and what to change.
    """
    import ray

    total = ray.cluster_resources()
    largest_node = {
        key: max((n["Resources"].get(key, 0.0) for n in ray.nodes() if n["Alive"]), default=0.0)
        for key in per_unit
    }
    for key, amount in per_unit.items():
        need = amount * count
        if need > total.get(key, 0.0) + 1e-9 or amount > largest_node[key] + 1e-9:
            raise ClusterCapacityError(
                f"{count} {what} x {amount:g} {key} need {need:g} {key}, but the Ray cluster has "
                f"{total.get(key, 0.0):g} {key} (at most {largest_node[key]:g} on one node); "
                f"ask for fewer {what} or fewer {key} each, or add nodes"
            )
    deadline = time.monotonic() + timeout_s
    while True:
        free = ray.available_resources()
        short = {k: a * count for k, a in per_unit.items() if a * count > free.get(k, 0.0) + 1e-9}
        if not short:
            return
        if time.monotonic() > deadline:
            raise ClusterCapacityError(
                f"{count} {what} need {short} but only "
                f"{ {k: free.get(k, 0.0) for k in short} } are free after waiting "
                f"{timeout_s:g}s; other Ray work holds the rest (pass fewer CPUs per {what[:-1]})"
            )
        time.sleep(0.5)


def autoscaling_config(
    min_replicas: int, max_replicas: int, target_ongoing_requests: float
) -> dict:
    """A Serve autoscaling_config; at least one replica starts so the first request is served."""
    return {
        "min_replicas": min_replicas,
        "initial_replicas": max(min_replicas, 1),
        "max_replicas": max(max_replicas, min_replicas, 1),
        "target_ongoing_requests": target_ongoing_requests,
    }
