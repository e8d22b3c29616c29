"""What every replica does when it starts: point MLflow at the app's registry and give torch the
CPUs Ray assigned it."""

from __future__ import annotations

import logging
import os
import threading

import ray
from mlflow import MlflowClient

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


def warm_registry() -> None:
    """Open the registry store in the background. MLflow's first use of a SQLite store creates
    its engine and checks the schema, seconds on a busy machine, which the first /models call
    would otherwise spend inside its deadline."""

    def open_store() -> None:
        try:
            MlflowClient().search_registered_models(max_results=1)
        except Exception as exc:  # noqa: BLE001 - an outage shows in /health and the answers
            logging.getLogger(__name__).debug("registry warm-up failed: %r", exc)

    threading.Thread(target=open_store, name="registry-warm-up", daemon=True).start()


def use_assigned_cpus() -> int:
    """Give torch as many threads as CPUs Ray assigned this replica (at least one)."""
    import torch  # here, not at the top: the ingress replica never loads torch

    assigned = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    threads = max(1, int(assigned))
    torch.set_num_threads(threads)
    return threads
