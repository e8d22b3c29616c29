"""Typed settings of the two deployments. `ModelSettings` is the model deployment's user_config:
Serve applies an edited one through `reconfigure()` without restarting replicas."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from deployments.schemas import MAX_BODY_BYTES, MAX_SEQUENCES

DEFAULT_MODEL_NAME = "lstm_price_forecast"
API_KEY_ENV = "MLTRADE_API_KEY"
REGISTRY_TIMEOUT_S = 5.0


class ModelSettings(BaseModel):
    """Runtime knobs of the model deployment (its user_config)."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_name: str = Field(DEFAULT_MODEL_NAME, description="Served when a request names none")
    default_version: str = Field("latest", description="'latest', a number or an alias")
    max_batch_size: int = Field(16, ge=1, le=256, description="Requests per forward pass")
    batch_wait_timeout_s: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="How long a batch waits to fill; 0 batches whatever queued meanwhile",
    )
    cache_size: int = Field(4, ge=1, le=64, description="Model versions kept in memory")
    resolve_ttl_s: float = Field(
        10.0, ge=0.0, description="How long 'latest' and aliases keep their resolved version"
    )
    registry_timeout_s: float = Field(
        REGISTRY_TIMEOUT_S,
        gt=0.0,
        description="Longest a request waits for the registry to resolve a version; on a "
        "timeout a version already loaded keeps serving, others answer 503",
    )


class ApiSettings(BaseModel):
    """Request limits and access control of the ingress."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_sequences: int = Field(MAX_SEQUENCES, ge=1, description="Sequences per request")
    max_body_bytes: int = Field(MAX_BODY_BYTES, ge=1024, description="Request body size limit")
    api_key_env: str = Field(
        API_KEY_ENV,
        description="Environment variable holding the API key; unset or empty leaves the API open",
    )
    body_timeout_s: float = Field(
        15.0, gt=0.0, description="The whole request body must arrive within this time, else 408"
    )
    model_timeout_s: float = Field(
        10.0,
        gt=0.0,
        description="Longest a forecast waits for the model deployment (a replica restarting "
        "included), else 503 model_unavailable",
    )
    max_inflight_forecasts: int = Field(
        32,
        ge=1,
        description="Forecast requests one ingress replica works on at once; more answer 503 "
        "overloaded with Retry-After at once instead of queueing",
    )
    registry_timeout_s: float = Field(
        REGISTRY_TIMEOUT_S, gt=0.0, description="Deadline of /models' registry call, else 503"
    )
