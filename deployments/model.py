"""The model deployment: registered forecasters loaded on demand, concurrent requests batched
into one forward and one backward pass per model, per-request interval, feature importance and
drift."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
from ray import serve

from deployments.messages import ForecastJob, RegistryUnavailableError
from deployments.model_cache import LoadedModel, ModelCache
from deployments.observability import ModelMetrics
from deployments.replica import configure_tracking, use_assigned_cpus
from deployments.settings import (
    ConfigRefused,
    ModelSettings,
    check_default_model,
    parse_model_settings,
)
from training.bundle import ForecastAnalysis
from training.features import WindowShapeError
from training.registry import InvalidModelNameError, ModelNotFoundError, resolve_version

log = logging.getLogger("ray.serve")
HEALTH_TTL_S = 5.0
REGISTRY_TIMEOUT_S = 10.0


@serve.deployment(name="ModelDeployment", max_ongoing_requests=64)
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
        self.cache.configure(new.cache_size, new.resolve_ttl_s)
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
            RegistryUnavailableError), so one bad request never fails the others.
        """
        resolved = [await self._resolve(job) for job in jobs]
        return await self._predict_batch(list(zip(jobs, resolved, strict=True)))

    async def _resolve(self, job: ForecastJob) -> LoadedModel | Exception:
        name = job.model_name or self.settings.model_name
        version = job.model_version or self.settings.default_version
        try:
            return await self.cache.get(name, version)
        except (ModelNotFoundError, InvalidModelNameError) as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds when unreachable
            return RegistryUnavailableError(
                f"model registry not reachable while loading {name}@{version}: {exc!r}"
            )

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
        for found in forecaster.analyze_many(requests):
            trouble = found if isinstance(found, WindowShapeError) else _non_finite(found)
            if trouble is not None:  # fails its own request, not its batch mates
                where = f"model {model.name!r} v{model.version}"
                outputs.append(WindowShapeError(f"{where}: {trouble}"))
                continue
            forecast, drift = found.forecast, found.drift_report
            self.metrics.drift.set(drift["score"], tags)
            outputs.append(
                {
                    "predictions": forecast["prediction"].tolist(),
                    "predicted_returns": forecast["predicted_return"].tolist(),
                    "confidence_intervals": [
                        {"lower": lo, "upper": up, "confidence": forecaster.confidence}
                        for lo, up in zip(
                            forecast["lower"].tolist(), forecast["upper"].tolist(), strict=True
                        )
                    ],
                    "feature_importance": found.feature_importance,
                    "drift": drift,
                    "model_name": model.name,
                    "model_version": model.version,
                }
            )
        self.metrics.compute.observe((time.perf_counter() - start) * 1000, tags)
        return outputs

    async def health(self) -> dict:
        """Readiness: the default model is loaded and the registry answers (cached briefly)."""
        if self._health and time.monotonic() - self._health[0] < HEALTH_TTL_S:
            return self._health[1]
        name, spec = self.settings.model_name, self.settings.default_version
        registry_ok, error, model = True, None, None
        try:
            mv = await asyncio.wait_for(
                asyncio.to_thread(resolve_version, name, spec), REGISTRY_TIMEOUT_S
            )
            model = await self.cache.get(name, int(mv.version))
        except ModelNotFoundError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - any registry failure means "not reachable"
            registry_ok, error = False, f"model registry not reachable: {exc!r}"
        report = {
            "ready": registry_ok and model is not None,
            "registry_reachable": registry_ok,
            "default_model": {
                "name": name,
                "version": spec,
                "resolved_version": model.version if model else None,
                "device": str(model.forecaster.device) if model else None,
            },
            "loaded_models": [{"name": n, "version": v} for n, v in self.cache.loaded],
            "torch_threads": self.threads,
            "replica": serve.get_replica_context().replica_id.unique_id,
            "error": error,
            "user_config_refused": self.refused,
        }
        self._health = (time.monotonic(), report)
        return report


async def _checked_settings(user_config: dict) -> ModelSettings:
    """The user_config as settings whose default model the registry holds.

    Raises:
        ConfigRefused: invalid fields, or the registry answered that the model, version or
            alias does not exist. A registry that does not answer refuses nothing (/health
            reports it), so an outage never blocks a deploy.
    """
    settings = parse_model_settings(user_config)
    try:
        await asyncio.wait_for(asyncio.to_thread(check_default_model, settings), REGISTRY_TIMEOUT_S)
    except ConfigRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds when unreachable
        log.warning("registry not reachable; %s not checked: %r", _spec(settings), exc)
    return settings


def _spec(settings: ModelSettings) -> str:
    return f"{settings.model_name}@{settings.default_version}"


def _non_finite(found: ForecastAnalysis) -> str | None:
    """Why a request's answer is not finite (input within the accepted range can still make
    the forecast overflow, e.g. a price jump of many orders of magnitude), or None."""
    for key in ("prediction", "lower", "upper", "predicted_return"):
        bad = ~np.isfinite(found.forecast[key])
        if bad.any():
            return (
                f"the forecast's {key} of window {int(np.argmax(bad))} is not finite; the "
                "window's prices move too far for the model (check for a wrong scale or unit)"
            )
    drift = found.drift_report
    values = [*found.feature_importance.values(), drift["score"], *drift["per_feature"].values()]
    if not np.isfinite(values).all():
        return "feature importance or drift is not finite for these windows; check their scale"
    return None
