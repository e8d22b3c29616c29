"""The HTTP ingress: FastAPI routes that validate requests and call the model (and sentiment)
deployments through handles bound when the app is built."""

import asyncio
import logging
import os
import time

import numpy as np
import orjson
from fastapi import Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.config import BackpressureConfig
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from deployments.errors import describe_ragged, install_error_handlers, unavailable
from deployments.guard import OPEN_PATHS, RETRY_AFTER_S, ApiError, Guard
from deployments.messages import (
    ForecastJob,
    NeedsRegistryError,
    RegistryUnavailableError,
    SentimentUnavailableError,
    describe_registry_error,
)
from deployments.replica import configure_tracking, warm_registry
from deployments.schemas import (
    ErrorBody,
    HealthReport,
    PredictRequest,
    PredictResponse,
    SignalRequest,
    SignalResponse,
)
from deployments.settings import ApiSettings
from signals import HybridWeights, combine_signal
from training.features import WindowShapeError
from training.registry import InvalidModelNameError, ModelNotFoundError, list_models

# No `from __future__ import annotations`: FastAPI must see the real annotation objects of the
# methods that @serve.ingress re-binds.
log = logging.getLogger("ray.serve")
HYBRID_FIELDS = ("sentiment_weight", "ml_weight", "min_confidence")
# Requests per call to the model deployment, and calls in flight per ingress replica (one per
# model replica it may reach): their product stays within max_ongoing_requests, so batches fill
# and Serve has nothing to warn about
FORWARD_BATCH = 32
FORWARD_CALLS = 4
NUMPY = orjson.OPT_SERIALIZE_NUMPY  # numpy scalars as JSON numbers, as json.dumps writes them
HEALTH_TIMEOUT_S = 5.0  # a readiness probe must answer quickly, even when the model cannot
RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying (overloaded, unavailable)",
        "schema": {"type": "integer"},
    }
}
# What a forecast endpoint may answer besides 200 (docs/reference/http.md#errors)
ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 408, 413, 422, 501)}
ERRORS[503] = {"model": ErrorBody, "headers": RETRY_AFTER_HEADER}
MODELS_ERRORS = {code: ERRORS[code] for code in (401, 404, 422, 503)}

# Swagger UI and ReDoc from the fastapi-offline package, not a CDN: /docs renders offline
api = FastAPIOffline(
    title="mltrade prediction API",
    version="1.0",
    description="Next-bar price forecasts with calibrated intervals, feature importance and "
    "input drift, from models registered in MLflow.",
    swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
)
api.add_middleware(Guard)
install_error_handlers(api)


def openapi_with_bearer() -> dict:
    """The OpenAPI document with bearer auth declared on every data endpoint, so Swagger UI
    offers "Authorize" (the key is needed only where the app was started with one)."""
    if api.openapi_schema is None:
        schema = get_openapi(
            title=api.title, version=api.version, description=api.description, routes=api.routes
        )
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "The API key, when the service runs with MLTRADE_API_KEY set",
            }
        }
        for path, operations in schema["paths"].items():
            if path not in OPEN_PATHS:
                for operation in operations.values():
                    operation["security"] = [{"bearerAuth": []}]
        api.openapi_schema = schema
    return api.openapi_schema


api.openapi = openapi_with_bearer


# The ingress only waits (forecasts are admitted up to max_inflight_forecasts, the rest answer
# 503 overloaded at once), so it takes many requests at a time: clients still uploading hold
# one each. The proxy queues few beyond them (e.g. while a replica restarts) and answers the
# rest itself: 503, plain text, Retry-After: 1.
@serve.deployment(
    name="PredictionAPI",
    max_ongoing_requests=256,
    max_queued_requests=32,
    backpressure_config=BackpressureConfig(retry_after_s=RETRY_AFTER_S["overloaded"]),
)
@serve.ingress(api)
class PredictionAPI:
    """Routes /api/v1/...; holds no model, so it stays light and scales on its own.

    Args:
        model: handle to the ModelDeployment.
        sentiment: handle to the SentimentScorer, or None when the app runs without it.
        settings: ApiSettings fields (limits, API key variable).
        tracking_uri: MLflow tracking URI for /models (None: the environment's or the default).
    """

    def __init__(
        self,
        model: DeploymentHandle,
        sentiment: DeploymentHandle | None = None,
        settings: dict | None = None,
        tracking_uri: str | None = None,
    ) -> None:
        configure_tracking(tracking_uri)
        warm_registry()
        # By value over gRPC between replicas: measurably cheaper per call than object refs
        self.model = model.options(_by_reference=False)
        self.sentiment = sentiment
        self.settings = ApiSettings.model_validate(settings or {})
        api.state.api_key = os.environ.get(self.settings.api_key_env) or None
        api.state.max_body_bytes = self.settings.max_body_bytes
        api.state.body_timeout_s = self.settings.body_timeout_s
        api.state.max_inflight_forecasts = self.settings.max_inflight_forecasts

    def _windows(self, sequences: list | np.ndarray) -> np.ndarray:
        """The request's sequences as float64 [n, T, 5] (PredictRequest hands rectangular ones
        over as an array already); ragged or oversized input is refused by name."""
        limit = self.settings.max_sequences
        if len(sequences) > limit:
            raise ApiError(
                413,
                "too_many_sequences",
                f"{len(sequences)} sequences in one request; the limit is {limit}, split them "
                "over several requests",
            )
        if not isinstance(sequences, np.ndarray) or sequences.ndim != 3 or sequences.shape[2] != 5:
            raise ApiError(422, "invalid_sequences", describe_ragged(sequences))
        return sequences

    @serve.batch(
        max_batch_size=FORWARD_BATCH, batch_wait_timeout_s=0.0, max_concurrent_batches=FORWARD_CALLS
    )
    async def _forward(self, jobs: list[ForecastJob]) -> list[dict | Exception]:
        # Requests that arrived together share one call to the model deployment: under load
        # the hop between the two deployments is paid once per batch, not once per request.
        return await self.model.predict.remote(jobs)

    async def _forecast(self, body: PredictRequest, request: Request) -> dict:
        version = None if body.model_version is None else str(body.model_version)
        windows = self._windows(body.sequences)
        result = await self._within_deadline(ForecastJob(windows, body.model_name, version))
        if isinstance(result, ModelNotFoundError):
            raise ApiError(404, "model_not_found", str(result))
        if isinstance(result, InvalidModelNameError):
            raise ApiError(422, "invalid_request", f"model_name: {result}")
        if isinstance(result, WindowShapeError):
            raise ApiError(422, "invalid_sequences", str(result))
        if isinstance(result, RegistryUnavailableError):
            raise unavailable("registry_unavailable", str(result))
        request.state.log.update(
            model=result["model_name"],
            version=result["model_version"],
            sequences=len(body.sequences),
        )
        return result

    async def _within_deadline(self, job: ForecastJob) -> dict | Exception:
        """The model's answer within model_timeout_s, else 503 model_unavailable."""
        try:
            return await asyncio.wait_for(self._ask_model(job), self.settings.model_timeout_s)
        except TimeoutError:
            raise unavailable(
                "model_unavailable",
                f"the model deployment did not answer within {self.settings.model_timeout_s:g} "
                "s (a replica restarting, or overloaded); retry shortly",
            ) from None

    async def _ask_model(self, job: ForecastJob) -> dict | Exception:
        """The model deployment's answer; a job whose replica died on the way is sent once
        more (a forecast is idempotent), and waits for a replacement replica if need be."""
        try:
            return await self._ask_model_once(job)
        except RayActorError as exc:
            log.warning("model replica lost (%s); sending the request again", exc)
        try:
            return await self._ask_model_once(job)
        except RayActorError:
            raise unavailable(
                "model_unavailable",
                "the model replica serving this request stopped, twice; retry shortly",
            ) from None

    async def _ask_model_once(self, job: ForecastJob) -> dict | Exception:
        try:
            result = await self._forward(job)
            if isinstance(result, NeedsRegistryError):  # alone, not to hold up a batch
                result = await self.model.load_and_predict.remote(job)
            return result
        except BackPressureError:
            raise unavailable(
                "overloaded",
                "the model deployment's queue is full; retry after "
                f"{RETRY_AFTER_S['overloaded']} s",
            ) from None

    def _require_sentiment(self) -> DeploymentHandle:
        if self.sentiment is None:
            raise ApiError(
                501,
                "sentiment_not_enabled",
                "this application runs without the sentiment deployment; build it with "
                "with_sentiment: true (serve_config.yaml args) or send include_sentiment: false",
            )
        return self.sentiment

    async def _sentiment(self, body: PredictRequest) -> dict:
        headlines = (
            None
            if body.headlines is None
            else [h if isinstance(h, str) else h.model_dump() for h in body.headlines]
        )
        scorer, timeout = self._require_sentiment(), self.settings.model_timeout_s
        try:
            return await asyncio.wait_for(scorer.aggregate.remote(body.symbol, headlines), timeout)
        except ValueError as exc:  # NewsInputError, raised in the scorer's replica
            raise ApiError(422, "invalid_headlines", str(getattr(exc, "cause", exc))) from None
        except SentimentUnavailableError as exc:
            raise unavailable("sentiment_unavailable", str(getattr(exc, "cause", exc))) from None
        except (TimeoutError, RayActorError, BackPressureError):
            raise unavailable(
                "sentiment_unavailable",
                f"the sentiment scorer did not answer within {timeout:g} s (a replica "
                "restarting, or overloaded); retry shortly, or send include_sentiment: false",
            ) from None

    @api.post("/api/v1/ml/predict", response_model=PredictResponse, responses=ERRORS)
    async def predict(self, body: PredictRequest, request: Request) -> Response:
        """Forecast the next close of each sequence, with interval, importance and drift."""
        if body.include_sentiment:
            self._require_sentiment()  # fail before any model work
            result, sentiment = await asyncio.gather(
                self._forecast(body, request), self._sentiment(body)
            )
            result["sentiment"] = sentiment
        else:
            result = await self._forecast(body, request)
        result["symbol"] = body.symbol
        result["latency_ms"] = round((time.perf_counter() - request.state.start) * 1000, 3)
        # orjson: a tenth of json.dumps' time; the model answers only finite numbers
        return Response(orjson.dumps(result, option=NUMPY), media_type="application/json")

    @api.post("/api/v1/ml/signal", response_model=SignalResponse, responses=ERRORS)
    async def signal(self, body: SignalRequest, request: Request) -> JSONResponse:
        """BUY/SELL/HOLD per sequence: the forecast blended with the symbol's news sentiment."""
        self._require_sentiment()
        try:
            given = {k: v for k in HYBRID_FIELDS if (v := getattr(body, k)) is not None}
            weights = HybridWeights(**given)
        except ValueError as exc:
            raise ApiError(422, "invalid_weights", str(exc)) from None
        forecast, sentiment = await asyncio.gather(
            self._forecast(body, request), self._sentiment(body)
        )
        signals = [
            combine_signal(
                ret,
                ci["lower"],
                ci["upper"],
                pred,
                sentiment["score"],
                sentiment["confidence"],
                weights,
            )
            for pred, ret, ci in zip(
                forecast["predictions"],
                forecast["predicted_returns"],
                forecast["confidence_intervals"],
                strict=True,
            )
        ]
        return JSONResponse(
            {
                "symbol": body.symbol,
                "signals": signals,
                "sentiment": sentiment,
                "model_name": forecast["model_name"],
                "model_version": forecast["model_version"],
                "latency_ms": round((time.perf_counter() - request.state.start) * 1000, 3),
            }
        )

    @api.get("/api/v1/ml/models", responses=MODELS_ERRORS)
    async def models(self, request: Request, name: str | None = None) -> JSONResponse:
        """Registered models with versions, aliases and test metrics."""
        unknown = sorted(set(request.query_params) - {"name"})
        if unknown:  # as a body's unknown field is: a typo should not be ignored silently
            raise ApiError(
                422, "invalid_request", f"unknown query parameter {unknown[0]!r}; only 'name'"
            )
        timeout = self.settings.registry_timeout_s
        try:
            found = await asyncio.wait_for(asyncio.to_thread(list_models, name), timeout)
        except ModelNotFoundError as exc:
            raise ApiError(404, "model_not_found", str(exc)) from None
        except InvalidModelNameError as exc:
            raise ApiError(422, "invalid_request", f"name: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - any registry failure is "unavailable" here
            message = describe_registry_error(exc, timeout)
            raise unavailable("registry_unavailable", message) from None
        return JSONResponse(found)

    @api.get(
        "/api/v1/health",
        response_model=HealthReport,
        responses={503: {"model": HealthReport, "description": "Not ready"}},
    )
    async def health(self) -> JSONResponse:
        """Readiness: 200 when the default model is loaded, else 503; a registry outage is
        reported (the loaded model keeps serving), and so is a model deployment that does not
        answer."""
        timeout = min(HEALTH_TIMEOUT_S, self.settings.model_timeout_s)
        try:
            report = await asyncio.wait_for(self.model.health.remote(), timeout)
        except (TimeoutError, RayActorError, BackPressureError):
            message = f"the model deployment did not answer within {timeout:g} s"
            report = {
                "ready": False,
                "registry_reachable": None,
                "dependencies": {"model_deployment": {"ok": False, "message": message}},
                "error": message,
            }
        report["sentiment_enabled"] = self.sentiment is not None
        return JSONResponse(report, status_code=200 if report["ready"] else 503)
