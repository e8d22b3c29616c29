"""The HTTP ingress: FastAPI routes that validate requests and call the model (and sentiment)
deployments through handles bound when the app is built."""

import asyncio
import os
import time

import numpy as np
from fastapi import Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.errors import describe_ragged, install_error_handlers
from deployments.guard import OPEN_PATHS, ApiError, Guard
from deployments.messages import (
    ForecastJob,
    RegistryUnavailableError,
    SentimentUnavailableError,
)
from deployments.replica import configure_tracking
from deployments.schemas import (
    ErrorBody,
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
HYBRID_FIELDS = ("sentiment_weight", "ml_weight", "min_confidence")
FORWARD_BATCH = 64  # requests per call to the model deployment
ERRORS = {code: {"model": ErrorBody} for code in (401, 404, 413, 422, 501, 503)}

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


@serve.deployment(name="PredictionAPI", max_ongoing_requests=128)
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
        # By value over gRPC between replicas: measurably cheaper per call than object refs
        self.model = model.options(_by_reference=False)
        self.sentiment = sentiment
        self.settings = ApiSettings.model_validate(settings or {})
        api.state.api_key = os.environ.get(self.settings.api_key_env) or None
        api.state.max_body_bytes = self.settings.max_body_bytes

    def _windows(self, sequences: list) -> np.ndarray:
        """Nested lists -> float64 [n, T, 5]; ragged or oversized input is refused by name."""
        limit = self.settings.max_sequences
        if len(sequences) > limit:
            raise ApiError(
                413,
                "too_many_sequences",
                f"{len(sequences)} sequences in one request; the limit is {limit}, split them "
                "over several requests",
            )
        try:
            arr = np.asarray(sequences, dtype=np.float64)
        except ValueError:
            raise ApiError(422, "invalid_sequences", describe_ragged(sequences)) from None
        if arr.ndim != 3 or arr.shape[2] != 5:
            raise ApiError(422, "invalid_sequences", describe_ragged(sequences))
        return arr

    @serve.batch(max_batch_size=FORWARD_BATCH, batch_wait_timeout_s=0.0, max_concurrent_batches=4)
    async def _forward(self, jobs: list[ForecastJob]) -> list[dict | Exception]:
        # Requests that arrived together share one call to the model deployment: under load
        # the hop between the two deployments is paid once per batch, not once per request.
        return await self.model.predict.remote(jobs)

    async def _forecast(self, body: PredictRequest, request: Request) -> dict:
        version = None if body.model_version is None else str(body.model_version)
        windows = self._windows(body.sequences)
        result = await self._forward(ForecastJob(windows, body.model_name, version))
        if isinstance(result, ModelNotFoundError):
            raise ApiError(404, "model_not_found", str(result))
        if isinstance(result, InvalidModelNameError):
            raise ApiError(422, "invalid_request", f"model_name: {result}")
        if isinstance(result, WindowShapeError):
            raise ApiError(422, "invalid_sequences", str(result))
        if isinstance(result, RegistryUnavailableError):
            raise ApiError(503, "registry_unavailable", str(result))
        request.state.log.update(
            model=result["model_name"],
            version=result["model_version"],
            sequences=len(body.sequences),
        )
        return result

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
        try:
            return await self._require_sentiment().aggregate.remote(body.symbol, headlines)
        except ValueError as exc:  # NewsInputError, raised in the scorer's replica
            raise ApiError(422, "invalid_headlines", str(getattr(exc, "cause", exc))) from None
        except SentimentUnavailableError as exc:
            raise ApiError(503, "sentiment_unavailable", str(getattr(exc, "cause", exc))) from None

    @api.post("/api/v1/ml/predict", response_model=PredictResponse, responses=ERRORS)
    async def predict(self, body: PredictRequest, request: Request) -> JSONResponse:
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
        return JSONResponse(result)

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

    @api.get("/api/v1/ml/models", responses=ERRORS)
    async def models(self, name: str | None = None) -> JSONResponse:
        """Registered models with versions, aliases and test metrics."""
        try:
            return JSONResponse(await asyncio.to_thread(list_models, name))
        except ModelNotFoundError as exc:
            raise ApiError(404, "model_not_found", str(exc)) from None
        except InvalidModelNameError as exc:
            raise ApiError(422, "invalid_request", f"name: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - any registry failure is "unavailable" here
            raise ApiError(
                503, "registry_unavailable", f"model registry not reachable: {exc!r}"
            ) from None

    @api.get("/api/v1/health")
    async def health(self) -> JSONResponse:
        """Readiness: 200 when the default model is loaded and the registry answers, else 503."""
        report = await self.model.health.remote()
        report["sentiment_enabled"] = self.sentiment is not None
        return JSONResponse(report, status_code=200 if report["ready"] else 503)
