"""What every replica does when it starts: point MLflow at the app's registry and give torch the
CPUs Ray assigned it."""

from __future__ import annotations

import os

import ray
import torch

from training.tracking import setup_tracking

# MLflow's client defaults (120 s per HTTP call, 7 retries with backoff: about 4 minutes before
# it gives up) would keep a worker thread per request busy long after its deadline has answered
# the client. Set in the app's runtime_env to override.
MLFLOW_CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}


def configure_tracking(tracking_uri: str | None) -> None:
    """Point this replica's MLflow client at the registry the app was built for, with short
    HTTP timeouts and few retries (unless the environment sets them)."""
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    for key, value in MLFLOW_CLIENT_ENV.items():
        os.environ.setdefault(key, value)
    setup_tracking(check_server=False)  # an unreachable server shows in /health, not a crash


def use_assigned_cpus() -> int:
    """Give torch as many threads as CPUs Ray assigned this replica (at least one)."""
    assigned = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    threads = max(1, int(assigned))
    torch.set_num_threads(threads)
    return threads
