"""What the ingress and the deployments behind it pass each other: one forecast job per HTTP
request, and the errors they answer with (a forecast job's is returned in its place, so one bad
request never fails its batch mates)."""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import numpy as np


class RegistryUnavailableError(RuntimeError):
    """The model registry did not answer while resolving or loading a model."""


class NeedsRegistryError(LookupError):
    """Returned by `ModelDeployment.predict` for a job whose model this replica cannot serve
    without a registry call (a version not loaded here, or `latest` due for re-resolution):
    such a job is sent on its own to `load_and_predict`, so it never holds up its batch."""


class SentimentUnavailableError(RuntimeError):
    """The sentiment scorer has no model to score with: none registered under its name."""


@dataclass(frozen=True)
class ForecastJob:
    """One HTTP request's work: raw windows and the model asked for (None: the default)."""

    windows: np.ndarray  # [n, T, 5] float64 raw bars
    model_name: str | None = None
    model_version: str | None = None


def describe_registry_error(exc: BaseException, timeout_s: float) -> str:
    """A readable sentence for a failed registry call (not `TimeoutError()` or a traceback)."""
    where = f"the model registry at {mlflow.get_registry_uri()}"
    if isinstance(exc, TimeoutError):
        return f"{where} did not answer within {timeout_s:g} s"
    text = str(getattr(exc, "message", None) or exc)
    for cause in ("Connection refused", "timed out", "Name or service not known"):
        if cause in text:
            return f"{where} is not reachable ({cause.lower()})"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"{where} failed: {first[:300]}"
