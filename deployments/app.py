"""The application builder: `serve run deployments.app:build_app`, serve_config.yaml's
import_path, and `deployments.launcher` all build the app here.

Each deployment is bound with resources decided when the app is built (a GPU share only where
the cluster has GPUs, see training.cluster), and the ingress receives the handles of the model
deployment and the sentiment scorer at bind time.
"""

import logging
from concurrent.futures import ThreadPoolExecutor

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray.serve import Application

from deployments.ingress import PredictionAPI
from deployments.model import ModelDeployment
from deployments.sentiment import ScorerSettings, SentimentScorer
from deployments.settings import (
    API_KEY_ENV,
    DEFAULT_MODEL_NAME,
    ApiSettings,
    ConfigRefused,
    ModelSettings,
    VersionSpec,
    check_default_model,
    describe_invalid,
    parse_model_settings,
)
from training.cluster import autoscaling_config, gpu_share
from training.tracking import tracking_uri as default_tracking_uri

# No `from __future__ import annotations` here: Serve reads build_app's annotation at runtime.

# The ingress writes one structured line per request; Serve's own access lines would double it.
QUIET = {"enable_access_log": False}
REGISTRY_TIMEOUT_S = 10.0  # a registry slower than this is not waited for at build time
log = logging.getLogger("ray.serve")
SCORER_TARGET_ONGOING_REQUESTS = 8  # a scorer request is a transformer forward pass: scale early


class AppArgs(BaseModel):
    """Everything `build_app` takes; the `args:` block of serve_config.yaml."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_name: str = DEFAULT_MODEL_NAME
    default_version: VersionSpec = Field("latest", description="'latest', a number or an alias")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default MLFLOW_TRACKING_URI or ./mlflow.db"
    )
    # the model deployment's user_config (see ModelSettings)
    max_batch_size: int = ModelSettings.model_fields["max_batch_size"].default
    batch_wait_timeout_s: float = ModelSettings.model_fields["batch_wait_timeout_s"].default
    cache_size: int = ModelSettings.model_fields["cache_size"].default
    resolve_ttl_s: float = ModelSettings.model_fields["resolve_ttl_s"].default
    registry_timeout_s: float = Field(
        ModelSettings.model_fields["registry_timeout_s"].default,
        gt=0,
        description="Deadline of registry calls on the request path (model deployment, /models)",
    )
    model_num_cpus: float = Field(0.5, gt=0)
    ingress_num_cpus: float = Field(0.25, gt=0)
    gpus_per_model_replica: float = Field(
        0.5, ge=0, description="Used only if the cluster has GPUs; the scorer asks half of it"
    )
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(16, gt=0)
    max_replicas_per_node: int | None = Field(
        None, ge=1, description="At most this many model replicas on one node (None: no limit)"
    )
    max_sequences: int = ApiSettings.model_fields["max_sequences"].default
    max_body_bytes: int = ApiSettings.model_fields["max_body_bytes"].default
    api_key_env: str = API_KEY_ENV
    body_timeout_s: float = Field(ApiSettings.model_fields["body_timeout_s"].default, gt=0)
    model_timeout_s: float = Field(ApiSettings.model_fields["model_timeout_s"].default, gt=0)
    max_inflight_forecasts: int = Field(
        ApiSettings.model_fields["max_inflight_forecasts"].default, ge=1
    )
    with_sentiment: bool = Field(
        True, description="Bind the news sentiment scorer (include_sentiment, /signal)"
    )
    sentiment_settings: ScorerSettings = Field(
        default_factory=ScorerSettings, description="The SentimentScorer's user_config"
    )
    sentiment_num_cpus: float = Field(0.5, gt=0)


def model_actor_options(args: AppArgs) -> dict:
    """Ray resources of one model replica: a GPU share only where the cluster has GPUs."""
    return {"num_cpus": args.model_num_cpus, "num_gpus": gpu_share(args.gpus_per_model_replica)}


def model_settings(args: AppArgs) -> ModelSettings:
    """The model deployment's user_config from the builder args.

    Raises:
        ConfigRefused: a field out of its range (named).
    """
    fields = {name: getattr(args, name) for name in ModelSettings.model_fields}
    uri = args.tracking_uri or default_tracking_uri()
    return parse_model_settings(fields, uri, where="args")


def check_args(args: AppArgs | dict | None) -> AppArgs:
    """Builder args checked before anything is deployed: their fields, then that the registry
    holds `model_name` at `default_version` (a registry that does not answer within
    REGISTRY_TIMEOUT_S refuses nothing; /health reports it once the app runs).

    Raises:
        ConfigRefused: naming the field (and, for the model, the versions and aliases that exist).
    """
    if not isinstance(args, AppArgs):
        try:
            args = AppArgs.model_validate(args or {})
        except ValidationError as exc:
            raise ConfigRefused(f"args refused: {describe_invalid(exc)}") from None
    settings = model_settings(args)
    uri = args.tracking_uri or default_tracking_uri()
    pool = ThreadPoolExecutor(1)
    try:
        pool.submit(check_default_model, settings, uri).result(REGISTRY_TIMEOUT_S)
    except ConfigRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - unreachable or slow: nothing known either way
        log.warning("model registry not reachable; %s not checked: %r", settings.model_name, exc)
    finally:
        pool.shutdown(wait=False)
    return args


def bind_model(args: AppArgs, tracking_uri: str) -> Application:
    """The model deployment with its resources, autoscaling and user_config."""
    return ModelDeployment.options(
        ray_actor_options=model_actor_options(args),
        autoscaling_config=autoscaling_config(
            args.min_replicas, args.max_replicas, args.target_ongoing_requests
        ),
        user_config=model_settings(args).model_dump(),
        logging_config=QUIET,
        max_replicas_per_node=args.max_replicas_per_node,
    ).bind(tracking_uri)


def bind_scorer(args: AppArgs, tracking_uri: str) -> Application:
    """The sentiment scorer with its own resources (half the model's GPU share, where the
    cluster has GPUs), autoscaling and user_config."""
    return SentimentScorer.options(
        ray_actor_options={
            "num_cpus": args.sentiment_num_cpus,
            "num_gpus": gpu_share(args.gpus_per_model_replica / 2),
        },
        autoscaling_config=autoscaling_config(
            args.min_replicas, args.max_replicas, SCORER_TARGET_ONGOING_REQUESTS
        ),
        user_config=args.sentiment_settings.model_dump(),
    ).bind(tracking_uri)


def build_app(args: AppArgs | dict | None = None) -> Application:
    """Build the prediction application: ingress -> model deployment and sentiment scorer.

    Args:
        args: AppArgs or a dict of its fields (as in serve_config.yaml); None: every default,
            which serves the news sentiment too (`with_sentiment: false` leaves it out).

    Returns:
        The bound application, ready for `serve.run` or a Serve config.

    Raises:
        ConfigRefused: bad args, or a model, version or alias the registry does not hold;
            under `serve deploy` the app is then DEPLOY_FAILED with this message and the
            replicas already running keep serving.
    """
    args = check_args(args)
    uri = args.tracking_uri or default_tracking_uri()
    sentiment = bind_scorer(args, uri) if args.with_sentiment else None
    api_settings = ApiSettings(
        **{name: getattr(args, name) for name in ApiSettings.model_fields},
    )
    return PredictionAPI.options(
        ray_actor_options={"num_cpus": args.ingress_num_cpus},
        logging_config=QUIET,
        autoscaling_config=autoscaling_config(
            args.min_replicas, args.max_replicas, 4 * args.target_ongoing_requests
        ),
    ).bind(bind_model(args, uri), sentiment, api_settings.model_dump(), uri)
