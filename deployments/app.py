"""The application builder: `serve run deployments.app:build_app`, serve_config.yaml's
import_path, and `deployments.run` all build the app here.

Resources are decided from what the cluster reports when the app is built: the model
deployment asks for a GPU share only where the cluster has GPUs.
"""

import ray
import torch
from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from deployments.ingress import PredictionAPI
from deployments.model import ModelDeployment
from deployments.settings import API_KEY_ENV, DEFAULT_MODEL_NAME, ApiSettings, ModelSettings
from training.tracking import tracking_uri as default_tracking_uri

# No `from __future__ import annotations` here: Serve reads build_app's annotation at runtime.

# The ingress writes one structured line per request; Serve's own access lines would double it.
QUIET = {"enable_access_log": False}


class AppArgs(BaseModel):
    """Everything `build_app` takes; the `args:` block of serve_config.yaml."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_name: str = DEFAULT_MODEL_NAME
    default_version: str = "latest"
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default MLFLOW_TRACKING_URI or ./mlflow.db"
    )
    # the model deployment's user_config (see ModelSettings)
    max_batch_size: int = ModelSettings.model_fields["max_batch_size"].default
    batch_wait_timeout_s: float = ModelSettings.model_fields["batch_wait_timeout_s"].default
    cache_size: int = ModelSettings.model_fields["cache_size"].default
    resolve_ttl_s: float = ModelSettings.model_fields["resolve_ttl_s"].default
    model_num_cpus: float = Field(0.5, gt=0)
    ingress_num_cpus: float = Field(0.25, gt=0)
    gpus_per_model_replica: float = Field(
        0.5, ge=0, description="Used only if the cluster has GPUs"
    )
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(16, gt=0)
    max_sequences: int = ApiSettings.model_fields["max_sequences"].default
    max_body_bytes: int = ApiSettings.model_fields["max_body_bytes"].default
    api_key_env: str = API_KEY_ENV
    with_sentiment: bool = False
    sentiment_settings: dict = Field(
        default_factory=dict, description="SentimentScorer user_config (ScorerSettings fields)"
    )
    sentiment_num_cpus: float = Field(0.5, gt=0)


def cluster_gpus() -> float:
    """GPUs the cluster reports; before `ray.init` (`serve run module:app` builds first, then
    starts a local cluster) the GPUs this machine's torch sees."""
    if ray.is_initialized():
        return float(ray.cluster_resources().get("GPU", 0.0))
    return float(torch.cuda.device_count())


def model_actor_options(args: AppArgs, gpus_in_cluster: float) -> dict:
    """Ray resources of one model replica: a GPU share only where the cluster has GPUs."""
    gpus = args.gpus_per_model_replica if gpus_in_cluster > 0 else 0.0
    return {"num_cpus": args.model_num_cpus, "num_gpus": gpus}


def model_settings(args: AppArgs) -> ModelSettings:
    """The model deployment's user_config from the builder args."""
    return ModelSettings(**{name: getattr(args, name) for name in ModelSettings.model_fields})


def build_app(args: AppArgs | dict | None = None) -> Application:
    """Build the prediction application: ingress -> model deployment (-> sentiment scorer).

    Args:
        args: AppArgs or a dict of its fields (as in serve_config.yaml).

    Returns:
        The bound application, ready for `serve.run` or a Serve config.
    """
    args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args or {})
    uri = args.tracking_uri or default_tracking_uri()
    autoscaling = {
        "min_replicas": args.min_replicas,
        "initial_replicas": max(args.min_replicas, 1),
        "max_replicas": max(args.max_replicas, args.min_replicas, 1),
        "target_ongoing_requests": args.target_ongoing_requests,
    }
    model = ModelDeployment.options(
        ray_actor_options=model_actor_options(args, cluster_gpus()),
        autoscaling_config=autoscaling,
        user_config=model_settings(args).model_dump(),
        logging_config=QUIET,
    ).bind(uri)
    sentiment = None
    if args.with_sentiment:
        from deployments.sentiment import bind_scorer  # optional part, imported on demand

        sentiment = bind_scorer(
            uri,
            args.sentiment_settings,
            num_cpus=args.sentiment_num_cpus,
            gpus_per_replica=args.gpus_per_model_replica / 2,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
        )
    api_settings = ApiSettings(
        max_sequences=args.max_sequences,
        max_body_bytes=args.max_body_bytes,
        api_key_env=args.api_key_env,
    )
    return PredictionAPI.options(
        ray_actor_options={"num_cpus": args.ingress_num_cpus},
        logging_config=QUIET,
        autoscaling_config={
            **autoscaling,
            "target_ongoing_requests": 4 * args.target_ongoing_requests,
        },
    ).bind(model, sentiment, api_settings.model_dump(), uri)
