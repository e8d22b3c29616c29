"""Where runs and models are tracked: the project's SQLite store by default, or the server named
by MLFLOW_TRACKING_URI. Called from entry points, never at import time."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import mlflow

from training.data import PROJECT_ROOT

DEFAULT_DB = PROJECT_ROOT / "mlflow.db"


class TrackingError(RuntimeError):
    """Raised when the tracking server cannot be reached."""


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else the project's SQLite file."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB}"


def setup_tracking(check_server: bool = True) -> str:
    """Point MLflow at the tracking store and, for a server, check it answers before any work.

    Returns:
        The tracking URI in use.
    """
    uri = tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri  # Ray workers and subprocesses inherit it
    mlflow.set_tracking_uri(uri)
    if check_server and uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as resp:
                resp.read()
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingError(
                f"MLflow tracking server at {uri} is not reachable ({exc}); start it with "
                "`mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri "
                "sqlite:///mlflow.db` or unset MLFLOW_TRACKING_URI to use the local store"
            ) from exc
    return uri


def artifact_location() -> str | None:
    """For a SQLite store, artifacts go to mlruns/ beside the database file (independent of the
    working directory); a tracking server decides for itself."""
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///") :]).resolve().parent / "mlruns").as_uri()


def use_experiment(name: str) -> str:
    """Select (creating if needed) an experiment; SQLite stores keep artifacts beside the file.

    Returns:
        The experiment id.
    """
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        experiment_id = mlflow.create_experiment(name, artifact_location=artifact_location())
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id
