"""Typed settings of the two deployments. `ModelSettings` is the model deployment's user_config:
Serve applies an edited one through `reconfigure()` without restarting replicas, so it is checked
(fields, then the registry) before anything changes: `check_model_settings`."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from ray.serve.exceptions import RayServeException

from deployments.schemas import MAX_BODY_BYTES, MAX_SEQUENCES
from training.registry import (
    InvalidModelNameError,
    ModelNotFoundError,
    UnknownModelError,
    resolve_version,
    version_choices,
)

DEFAULT_MODEL_NAME = "lstm_price_forecast"
API_KEY_ENV = "MLTRADE_API_KEY"
REGISTRY_TIMEOUT_S = 5.0
MODEL_FIELDS = ("model_name", "default_version")


def _version_spec(value: object) -> str:
    """'latest', a version number or an alias, as text: YAML reads `default_version: 1` as 1."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected 'latest', a version number or an alias, got {value!r}")
    text = str(value).strip()
    if not text:
        raise ValueError("empty; use 'latest', a version number or an alias")
    numeric = isinstance(value, int) or text.lstrip("-").isdigit()
    if numeric and not (text.isascii() and text.isdigit() and int(text) >= 1):
        raise ValueError(f"{value!r} is not a version number: they are ASCII digits from 1")
    return text


VersionSpec = Annotated[str, BeforeValidator(_version_spec)]


class ConfigRefused(RayServeException, ValueError):
    """Settings that would leave the service without its model; the message names the field
    and, for the model fields, the versions and aliases that exist.

    A RayServeException so that Serve, building the app for `serve deploy`, reports it as the
    app's DEPLOY_FAILED message at once; any other exception is retried three times first.
    """


class ModelSettings(BaseModel):
    """Runtime knobs of the model deployment (its user_config)."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_name: str = Field(DEFAULT_MODEL_NAME, description="Served when a request names none")
    default_version: VersionSpec = Field(
        "latest", description="'latest', a version number (1 or '1') or an alias"
    )
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


def describe_invalid(exc: ValidationError) -> str:
    """'field: what is wrong' for each pydantic error, joined by '; '."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: "
        f"{err['msg'].removeprefix('Value error, ')}"
        for err in exc.errors()
    )


def parse_model_settings(
    config: dict | None, tracking_uri: str | None = None, where: str = "user_config"
) -> ModelSettings:
    """A user_config (or the builder args that make one, `where`) as ModelSettings.

    Raises:
        ConfigRefused: naming each field that breaks its rules or is unknown; when a model
            field is wrong the message lists the versions and aliases that exist, if the
            registry answers.
    """
    try:
        return ModelSettings.model_validate(config or {})
    except ValidationError as exc:
        message = f"{where} refused: {describe_invalid(exc)}"
        wrong = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
        name = (config or {}).get("model_name", DEFAULT_MODEL_NAME)
        if wrong & set(MODEL_FIELDS) and isinstance(name, str):
            try:
                message += f"; model {name!r} has {version_choices(name, tracking_uri)}"
            except Exception:  # noqa: BLE001 - the listing is a courtesy; the refusal stands
                pass
        raise ConfigRefused(message) from None


def check_default_model(settings: ModelSettings, tracking_uri: str | None = None):
    """The registered version the settings serve by default.

    Returns:
        MLflow's ModelVersion.

    Raises:
        ConfigRefused: the registry answered that the model, version or alias does not exist.
        Exception: any other (the registry did not answer: nothing is known either way).
    """
    name, version = settings.model_name, settings.default_version
    try:
        return resolve_version(name, version, tracking_uri)
    except (UnknownModelError, InvalidModelNameError) as exc:
        raise ConfigRefused(f"model_name {name!r} refused: {exc}") from None
    except ModelNotFoundError as exc:
        raise ConfigRefused(f"default_version {version!r} refused: {exc}") from None
