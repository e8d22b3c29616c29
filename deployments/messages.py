"""What the ingress and the deployments behind it pass each other: one forecast job per HTTP
request, and the errors they answer with (a forecast job's is returned in its place, so one bad
request never fails its batch mates)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class RegistryUnavailableError(RuntimeError):
    """The model registry did not answer while resolving or loading a model."""


class SentimentUnavailableError(RuntimeError):
    """The sentiment scorer has no model to score with: none registered under its name."""


@dataclass(frozen=True)
class ForecastJob:
    """One HTTP request's work: raw windows and the model asked for (None: the default)."""

    windows: np.ndarray  # [n, T, 5] float64 raw bars
    model_name: str | None = None
    model_version: str | None = None
