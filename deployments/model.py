"""The model deployment: registered forecasters loaded on demand, concurrent requests batched
into one forward and one backward pass per model, per-request interval, feature importance and
drift."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

import mlflow
import numpy as np
from ray import serve

from deployments.messages import (
    ForecastJob,
    NeedsRegistryError,
    RegistryUnavailableError,
    describe_registry_error,
)
from deployments.model_cache import LoadedModel, ModelCache
from deployments.observability import ModelMetrics
from deployments.replica import configure_tracking, use_assigned_cpus
from deployments.settings import (
    ConfigRefused,
    ModelSettings,
    check_default_model,
    parse_model_settings,
)
from training.features import WindowShapeError
from training.registry import InvalidModelNameError, ModelNotFoundError

log = logging.getLogger("ray.serve")
HEALTH_TTL_S = 5.0
_FORECAST_KEYS = ("prediction", "lower", "upper", "predicted_return")


# The ingress sends batches (a few calls at a time per ingress replica); max_queued_requests
# bounds what waits in each caller's queue, e.g. while a replica restarts: beyond it the
# ingress gets BackPressureError and answers 503 overloaded.
@serve.deployment(name="ModelDeployment", max_ongoing_requests=64, max_queued_requests=64)
class ModelDeployment:
    """Serves every registered version of any model from one replica pool.

    Args:
        tracking_uri: MLflow tracking URI of the registry (None: MLFLOW_TRACKING_URI or the
            project's SQLite store).
    """

    def __init__(self, tracking_uri: str | None = None) -> None:
        configure_tracking(tracking_uri)
        self.threads = use_assigned_cpus()
        self.settings = ModelSettings()
        self.configured = False  # until a user_config is accepted
        self.refused: str | None = None  # why the last user_config was refused (for /health)
        self.cache = ModelCache(self.settings.cache_size, self.settings.resolve_ttl_s)
        self.metrics = ModelMetrics()
        self._health: tuple[float, dict] | None = None

    async def reconfigure(self, user_config: dict) -> None:
        """Apply a new user_config (default model, batching, cache) without a restart.

        It is checked before anything changes: its fields, then that the registry holds the
        model and the version or alias. A running replica refuses a bad one and keeps serving
        what it served (raising would make Serve stop the replica and fail every restart with
        the same config); /health and the replica log say why. A new replica has nothing to
        serve yet: it raises, and `serve status` shows the message.

        Raises:
            ConfigRefused: on a replica's first user_config only.
        """
        try:
            new = await _checked_settings(user_config)
        except ConfigRefused as exc:
            if not self.configured:
                raise
            self.refused = str(exc)
            self._health = None
            log.error("%s; still serving %s", exc, _spec(self.settings))
            return
        self.settings, self.configured, self.refused = new, True, None
        self._predict_batch.set_max_batch_size(new.max_batch_size)
        self._predict_batch.set_batch_wait_timeout_s(new.batch_wait_timeout_s)
        self.cache.configure(new.cache_size, new.resolve_ttl_s, new.registry_timeout_s)
        self._health = None
        try:  # load the default now so the first request does not wait for it
            await self.cache.get(new.model_name, new.default_version)
        except Exception as exc:  # noqa: BLE001 - the replica must start; /health reports it
            log.warning("default model %s not loaded: %s", _spec(new), exc)

    async def predict(self, jobs: list[ForecastJob]) -> list[dict | Exception]:
        """Forecast the windows of several requests (the ingress forwards what arrived together).

        Returns:
            Per job, in order: predictions, predicted_returns, confidence_intervals,
            feature_importance, drift, model_name and the resolved model_version; or the
            exception that job earned (ModelNotFoundError for an unknown model, version or
            alias; WindowShapeError for windows that do not fit the model;
            NeedsRegistryError for a model this replica cannot serve without asking the
            registry first: send that job to `load_and_predict`), so one bad or slow request
            never fails or delays the others.
        """
        ready = [self._loaded(job) for job in jobs]
        return await self._predict_batch(list(zip(jobs, ready, strict=True)))

    async def load_and_predict(self, job: ForecastJob) -> dict | Exception:
        """`predict` for one job whose model must be resolved or loaded first (within the
        registry deadline; RegistryUnavailableError when the registry does not answer)."""
        model = await self._resolve(job)
        (result,) = await self._predict_batch([(job, model)])
        return result

    def _spec(self, job: ForecastJob) -> tuple[str, str]:
        return job.model_name or self.settings.model_name, (
            job.model_version or self.settings.default_version
        )

    def _loaded(self, job: ForecastJob) -> LoadedModel | Exception:
        name, version = self._spec(job)
        model = self.cache.peek(name, version)
        return model if model is not None else NeedsRegistryError(f"{name}@{version}")

    async def _resolve(self, job: ForecastJob) -> LoadedModel | Exception:
        name, version = self._spec(job)
        try:
            return await self.cache.get(name, version)
        except (ModelNotFoundError, InvalidModelNameError, RegistryUnavailableError) as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds when unreachable
            message = describe_registry_error(exc, self.settings.registry_timeout_s)
            return RegistryUnavailableError(f"while loading {name}@{version}: {message}")

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _predict_batch(self, calls: list[list[tuple]]) -> list[list[dict | Exception]]:
        """Concurrent predict calls merged: one forward pass per model over all their jobs."""
        flat = [item for call in calls for item in call]  # (job, LoadedModel | exception)
        self.metrics.batch_size.observe(len(flat), {})
        results: list = [model if isinstance(model, Exception) else None for _, model in flat]
        groups: dict[tuple[str, int], list[int]] = {}
        for i, (_, model) in enumerate(flat):
            if not isinstance(model, Exception):
                groups.setdefault((model.name, model.version), []).append(i)
        for indices in groups.values():
            outputs = self._forecast_group(
                flat[indices[0]][1], [flat[i][0].windows for i in indices]
            )
            for i, out in zip(indices, outputs, strict=True):
                results[i] = out
        out, offset = [], 0
        for call in calls:
            out.append(results[offset : offset + len(call)])
            offset += len(call)
        return out

    def _forecast_group(self, model: LoadedModel, requests: list[np.ndarray]) -> list:
        """One forward and one backward pass (importance) over every request for one model;
        each request's windows are checked and normalised once (Forecaster.analyze_many)."""
        start = time.perf_counter()
        forecaster = model.forecaster
        tags = {"model": model.name, "version": str(model.version)}
        outputs: list = []
        latest_drift = None
        for found in forecaster.analyze_many(requests):
            if isinstance(found, WindowShapeError):
                outputs.append(_refused(model, found))
                continue
            importance, drift = found.feature_importance, found.drift_report
            trouble = _non_finite(found.forecast, importance, drift)
            if trouble is not None:  # fails its own request, not its batch mates
                outputs.append(_refused(model, trouble))
                continue
            forecast = {k: found.forecast[k].tolist() for k in _FORECAST_KEYS}
            outputs.append(
                {
                    "predictions": forecast["prediction"],
                    "predicted_returns": forecast["predicted_return"],
                    "confidence_intervals": [
                        {"lower": lo, "upper": up, "confidence": forecaster.confidence}
                        for lo, up in zip(forecast["lower"], forecast["upper"], strict=True)
                    ],
                    "feature_importance": importance,
                    "drift": drift,
                    "model_name": model.name,
                    "model_version": model.version,
                }
            )
            latest_drift = drift["score"]
        if latest_drift is not None:  # the gauge shows the latest request's drift
            self.metrics.drift.set(latest_drift, tags)
        self.metrics.compute.observe((time.perf_counter() - start) * 1000, tags)
        return outputs

    async def health(self) -> dict:
        """Readiness: the default model is loaded (cached briefly). During a registry outage a
        loaded default keeps the replica ready; the report names the registry as down."""
        if self._health and time.monotonic() - self._health[0] < HEALTH_TTL_S:
            return self._health[1]
        name, spec = self.settings.model_name, self.settings.default_version
        error = None
        # loaded: no waiting (a due re-resolution runs in the background and shows in the next
        # report); else a registry round trip within its deadline
        model = self.cache.peek(name, spec)
        if model is None:
            try:
                model = await self.cache.get(name, spec)
            except (ModelNotFoundError, InvalidModelNameError, RegistryUnavailableError) as exc:
                error = str(exc)
        registry = self.cache.registry
        report = {
            "ready": model is not None,
            "registry_reachable": registry.ok,
            "dependencies": {
                "registry": {
                    "uri": mlflow.get_registry_uri(),
                    "ok": registry.ok,
                    "message": registry.message,
                    "down_since": None
                    if registry.down_since is None
                    else datetime.fromtimestamp(registry.down_since, UTC).isoformat(),
                }
            },
            "default_model": {
                "name": name,
                "version": spec,
                "resolved_version": model.version if model else None,
                "device": str(model.forecaster.device) if model else None,
            },
            "loaded_models": [{"name": n, "version": v} for n, v in self.cache.loaded],
            "stale_resolutions": self.cache.stale,
            "torch_threads": self.threads,
            "replica": serve.get_replica_context().replica_id.unique_id,
            "error": error or registry.message,
            "user_config_refused": self.refused,
        }
        self._health = (time.monotonic(), report)
        return report


def _refused(model: LoadedModel, trouble: object) -> WindowShapeError:
    """The error a request's windows earn from this model (they do not fit, or do not give a
    finite answer)."""
    return WindowShapeError(f"model {model.name!r} v{model.version}: {trouble}")


async def _checked_settings(user_config: dict) -> ModelSettings:
    """The user_config as settings whose default model the registry holds.

    Raises:
        ConfigRefused: invalid fields, or the registry answered that the model, version or
            alias does not exist. A registry that does not answer refuses nothing (/health
            reports it), so an outage never blocks a deploy.
    """
    settings = parse_model_settings(user_config)
    try:
        await asyncio.wait_for(
            asyncio.to_thread(check_default_model, settings), settings.registry_timeout_s
        )
    except ConfigRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds when unreachable
        log.warning("registry not reachable; %s not checked: %r", _spec(settings), exc)
    return settings


def _spec(settings: ModelSettings) -> str:
    return f"{settings.model_name}@{settings.default_version}"


def _non_finite(forecast: dict, importance: dict, drift: dict) -> str | None:
    """Why a request's answer is not finite (input within the accepted range can still make
    the forecast overflow, e.g. a price jump of many orders of magnitude), or None.

    Args:
        forecast: the request's forecast arrays; importance, drift: its summaries.
    """
    for key in _FORECAST_KEYS:
        bad = ~np.isfinite(forecast[key])
        if bad.any():
            return (
                f"the forecast's {key} of window {int(np.argmax(bad))} is not finite; the "
                "window's prices move too far for the model (check for a wrong scale or unit)"
            )
    values = [*importance.values(), drift["score"], *drift["per_feature"].values()]
    if not np.isfinite(values).all():
        return "feature importance or drift is not finite for these windows; check their scale"
    return None
