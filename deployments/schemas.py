"""Request and response bodies of the HTTP API (they also drive the OpenAPI docs at /docs)."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, field_validator

from training.registry import check_model_name, parse_version

MAX_SEQUENCES = 128  # per request; split bigger jobs into several requests
MAX_BODY_BYTES = 1 << 20  # 1 MiB, about 200 sequences of 60 hourly BTC bars as JSON
# The sane range of a price or volume: far above any traded price or hourly volume, far below
# where the forecast's exp() and the features' products overflow float64 (near 1.7e308).
MAX_BAR_VALUE = 1e15
BAR_FIELDS = ("open", "high", "low", "close", "volume")
# The OpenAPI shape of `sequences` (validation stays in the code, which names the bad place):
# 1..MAX_SEQUENCES windows of bars, each bar 5 numbers within the sane range.
SEQUENCES_SCHEMA = {
    "type": "array",
    "minItems": 1,
    "maxItems": MAX_SEQUENCES,
    "items": {
        "type": "array",
        "minItems": 1,
        "description": "One window: the model's sequence_length bars, oldest first",
        "items": {
            "type": "array",
            "minItems": len(BAR_FIELDS),
            "maxItems": len(BAR_FIELDS),
            "description": "One bar: [open, high, low, close, volume]",
            "items": {"type": "number", "minimum": 0, "maximum": MAX_BAR_VALUE},
        },
    },
}
MAX_DROPPED_LISTED = 10  # headlines a sentiment answer names as dropped; its counts cover all


class Headline(BaseModel):
    """A news headline for the sentiment part of a request."""

    title: str = Field(min_length=1, max_length=1000)
    published_at: str | None = Field(None, description="ISO 8601 time, UTC if no zone")


class PredictRequest(BaseModel):
    """Recent candles of one symbol; each sequence yields one next-bar forecast."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    symbol: str = Field("BTC/USDT", min_length=1, max_length=40, examples=["BTC/USDT"])
    sequences: list[list[list[StrictFloat]]] = Field(
        min_length=1,
        description="Windows of [open, high, low, close, volume] bars, oldest first, each exactly "
        "the model's sequence_length bars long (60 for the default model); at most "
        f"{MAX_SEQUENCES} sequences per request unless the app was built with another limit. "
        f"Values are JSON numbers (not strings or booleans) up to {MAX_BAR_VALUE:g}.",
        json_schema_extra=SEQUENCES_SCHEMA,
    )
    model_name: str | None = Field(
        None, max_length=200, description="Registered model; default: the app's user_config"
    )
    model_version: str | int | None = Field(
        None, description="'latest', a version number or an alias such as 'production'"
    )
    include_sentiment: bool = False
    headlines: list[str | Headline] | None = Field(
        None, max_length=200, description="Headlines to score when include_sentiment is true"
    )

    @field_validator("sequences")
    @classmethod
    def _within_sane_range(cls, sequences: list) -> list | np.ndarray:
        """Checks the range; rectangular sequences come out as the float64 array the model
        takes, so the request converts them once (ragged ones stay lists for the ingress to
        name the sequence or bar that differs)."""
        try:
            arr = np.asarray(sequences, dtype=np.float64)
        except ValueError:
            return sequences
        beyond = np.isfinite(arr) & (np.abs(arr) > MAX_BAR_VALUE)
        if beyond.any():
            w, t, k = np.argwhere(beyond)[0]
            field = BAR_FIELDS[k] if arr.ndim == 3 and k < len(BAR_FIELDS) else f"value {k}"
            raise ValueError(
                f"{field} {arr[w, t, k]:g} at window {w}, bar {t} is beyond the accepted range "
                f"of +-{MAX_BAR_VALUE:g} ({int(beyond.sum())} such values in total)"
            )
        return arr

    @field_validator("model_name")
    @classmethod
    def _registrable_name(cls, name: str | None) -> str | None:
        return None if name is None else check_model_name(name)

    @field_validator("model_version")
    @classmethod
    def _strict_version(cls, version: str | int | None) -> str | int | None:
        if isinstance(version, int) and parse_version(version) is None:
            raise ValueError(f"version numbers start at 1, got {version}")
        if isinstance(version, str) and version.strip().isdigit() and not parse_version(version):
            raise ValueError(
                f"{version!r} is not a version number: use ASCII digits, 'latest' or an alias"
            )
        return version


class Interval(BaseModel):
    lower: float
    upper: float
    confidence: float


class Drift(BaseModel):
    """Population stability index of the request's features against the training reference."""

    score: float
    threshold: float
    drifted: bool
    per_feature: dict[str, float]


class DroppedHeadline(BaseModel):
    title: str
    published_at: str = Field(description="ISO 8601, UTC")
    reason: str = Field(
        description="'older than the 72 h window before as_of' or 'published after as_of'"
    )


class DroppedHeadlines(BaseModel):
    """Headlines the sentiment left out: only those published in [as_of - max_age_hours,
    as_of] count (72 h by default; later ones would be look-ahead)."""

    too_old: int = Field(description="Published more than max_age_hours before as_of")
    after_as_of: int = Field(description="Published after as_of")
    headlines: list[DroppedHeadline] = Field(
        description=f"At most {MAX_DROPPED_LISTED} of them, those nearest the window, newest first"
    )


class Sentiment(BaseModel):
    """A symbol's news sentiment as of now (see docs/concepts/strategies.md)."""

    score: float = Field(description="In [-1, 1], recency- and confidence-weighted")
    confidence: float = Field(description="In [0, 1); 0 without usable headlines")
    n_headlines: int = Field(description="Headlines in the window, scored")
    source: str = Field(description="request, api:<style>, file:<name> or none")
    as_of: str
    dropped: DroppedHeadlines
    note: str | None = Field(None, description="Why the answer is neutral, or a source fallback")


class PredictResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    symbol: str
    predictions: list[float] = Field(description="Forecast next close per sequence")
    predicted_returns: list[float] = Field(description="Simple return from the last close")
    confidence_intervals: list[Interval]
    feature_importance: dict[str, float] = Field(description="|gradient x input| shares, sum 1")
    drift: Drift
    model_name: str
    model_version: int
    latency_ms: float
    sentiment: Sentiment | None = Field(None, description="Only with include_sentiment: true")


class SignalResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    symbol: str
    signals: list[dict] = Field(
        description="Per sequence: signal (BUY/SELL/HOLD), confidence, combined_score, "
        "price_prediction, predicted_return, ml_score, sentiment_score, sentiment_confidence, "
        "weights, configured_weights"
    )
    sentiment: Sentiment
    model_name: str
    model_version: int
    latency_ms: float


class SignalRequest(PredictRequest):
    """A forecast request answered with BUY/SELL/HOLD per sequence, blended with news sentiment
    by the rule of `signals.rules` (the weights default to HybridWeights')."""

    sentiment_weight: float | None = Field(None, ge=0, description="Weight at full confidence")
    ml_weight: float | None = Field(None, ge=0, description="Weight of the price forecast")
    min_confidence: float | None = Field(None, ge=0, le=1, description="Below it: HOLD")


class ErrorBody(BaseModel):
    error: str = Field(description="Machine-readable kind, e.g. invalid_input, model_not_found")
    message: str = Field(description="What was wrong, where, and what to do")


class DependencyHealth(BaseModel):
    ok: bool
    message: str | None = Field(description="Why it is down, in words")
    uri: str | None = None
    down_since: str | None = Field(None, description="ISO 8601 time of the first failure")


class HealthReport(BaseModel):
    """Readiness of the model replica that answered (/health answers 503 with this body too;
    when the model deployment itself does not answer, only ready, dependencies and error)."""

    model_config = ConfigDict(protected_namespaces=())

    ready: bool = Field(description="The default model is loaded and can serve")
    registry_reachable: bool | None = Field(description="None: unknown")
    dependencies: dict[str, DependencyHealth] = Field(
        description="The registry's state, or the model deployment's when it does not answer"
    )
    default_model: dict | None = None
    loaded_models: list[dict] = []
    stale_resolutions: list[dict] = Field(
        [], description="Versions served from their last resolution while the registry is down"
    )
    torch_threads: int | None = None
    replica: str | None = None
    error: str | None = Field(description="What keeps the replica from being fully ready")
    sentiment_enabled: bool
