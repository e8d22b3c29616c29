"""What every replica does when it starts: point MLflow at the app's registry and give torch the
CPUs Ray assigned it."""

from __future__ import annotations

import os

import ray
import torch

from training.tracking import setup_tracking


def configure_tracking(tracking_uri: str | None) -> None:
    """Point this replica's MLflow client at the registry the app was built for."""
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    setup_tracking(check_server=False)  # an unreachable server shows in /health, not a crash


def use_assigned_cpus() -> int:
    """Give torch as many threads as CPUs Ray assigned this replica (at least one)."""
    assigned = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    threads = max(1, int(assigned))
    torch.set_num_threads(threads)
    return threads
