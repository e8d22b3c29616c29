"""A bounded LRU cache of registered forecasters, and a short-lived cache of version resolutions.

Both hide MLflow round trips from the request path: `latest` and aliases are re-resolved at
most every `resolve_ttl_s`, loaded versions stay in memory until evicted. Blocking MLflow calls
run in a worker thread so the replica's event loop keeps serving other requests meanwhile.

The registry is a dependency that can go away, so a request for a version already loaded
never waits for it: once `latest` or an alias is due for re-resolution, the request is served
with the version it last resolved to while the registry is asked in the background (during an
outage at most every REGISTRY_RETRY_S). Only requests that need the registry (a version not
loaded yet) wait for it, with a deadline, and concurrent ones share a single call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from deployments.messages import RegistryUnavailableError, describe_registry_error
from deployments.settings import REGISTRY_TIMEOUT_S
from training.bundle import Forecaster
from training.registry import (
    InvalidModelNameError,
    ModelNotFoundError,
    parse_version,
    resolve_version,
)
from training.tracking import load_model

log = logging.getLogger("ray.serve")
REGISTRY_RETRY_S = 2.0  # while the registry is down, re-check stale resolutions this often
LOAD_TIMEOUT_S = 120.0  # a load downloads weights: far longer than a metadata call may take
CLIENT_ERRORS = (ModelNotFoundError, InvalidModelNameError)


@dataclass(frozen=True)
class LoadedModel:
    """A forecaster with the registry coordinates it was loaded from."""

    name: str
    version: int
    forecaster: Forecaster


@dataclass
class RegistryStatus:
    """What the last registry call showed: ok, or since when and why it is down."""

    ok: bool = True
    message: str | None = None
    down_since: float | None = None  # time.time() of the first failure in a row
    last_failure: float = 0.0  # time.monotonic()

    def failed(self, message: str) -> None:
        if self.ok:
            self.down_since = time.time()
            log.warning("model registry down: %s", message)
        self.ok, self.message, self.last_failure = False, message, time.monotonic()

    def answered(self) -> None:
        if not self.ok:
            log.warning("model registry back after %.1f s", time.time() - (self.down_since or 0))
        self.ok, self.message, self.down_since = True, None, None


@dataclass(frozen=True)
class _Resolution:
    number: int
    at: float  # time.monotonic()


class ModelCache:
    """LRU of loaded forecasters keyed by (name, version number).

    Args:
        capacity: most versions kept in memory at once.
        resolve_ttl_s: how long `latest` / an alias keeps resolving to the same number.
        resolver: (name, version) -> ModelVersion; raises ModelNotFoundError.
        loader: (name, version number) -> (Forecaster, ModelVersion).
        registry_timeout_s: deadline of one registry call made for a request.
    """

    def __init__(
        self,
        capacity: int = 4,
        resolve_ttl_s: float = 10.0,
        resolver: Callable = resolve_version,
        loader: Callable = load_model,
        registry_timeout_s: float = REGISTRY_TIMEOUT_S,
    ) -> None:
        self.capacity = capacity
        self.resolve_ttl_s = resolve_ttl_s
        self.registry_timeout_s = registry_timeout_s
        self.registry = RegistryStatus()
        self._resolver = resolver
        self._loader = loader
        self._models: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._resolved: dict[tuple[str, str], _Resolution] = {}
        self._stale: set[tuple[str, str]] = set()  # served from the last answer while down
        self._asking: dict[tuple[str, str], asyncio.Future] = {}
        self._pending: dict[tuple[str, int], asyncio.Future] = {}

    def configure(
        self, capacity: int, resolve_ttl_s: float, registry_timeout_s: float | None = None
    ) -> None:
        """Apply new limits (from user_config); shrinking evicts the least recently used."""
        self.capacity = capacity
        self.resolve_ttl_s = resolve_ttl_s
        if registry_timeout_s is not None:
            self.registry_timeout_s = registry_timeout_s
        self._resolved.clear()
        self._evict()

    @property
    def loaded(self) -> list[tuple[str, int]]:
        """(name, version) of the models in memory, least recently used first."""
        return list(self._models)

    @property
    def stale(self) -> list[dict]:
        """Specs served from their last resolution because the registry did not answer."""
        return [
            {"name": n, "version": v, "resolved_version": self._resolved[(n, v)].number}
            for n, v in sorted(self._stale)
            if (n, v) in self._resolved
        ]

    def peek(self, name: str, version: str | int) -> LoadedModel | None:
        """The loaded model meant by name and version if serving it needs no registry call,
        else None. A resolution older than resolve_ttl_s still counts, while it is renewed in
        the background: loaded versions keep their normal latency through a registry outage."""
        number = parse_version(version)
        if number is not None:
            return self._touch((name, number))
        key = (name, str(version).strip())
        hit = self._resolved.get(key)
        if hit is None:
            return None
        if time.monotonic() - hit.at >= self.resolve_ttl_s:
            self._renew(key)
        return self._touch((name, hit.number))

    async def resolve(self, name: str, version: str | int) -> int:
        """The version number meant by `latest`, a number or an alias.

        Raises:
            ModelNotFoundError: unknown name, version or alias.
            RegistryUnavailableError: the registry did not answer within the deadline and
                there is no earlier resolution to fall back on.
        """
        wanted, number = str(version).strip(), parse_version(version)
        if number is not None and (name, number) in self._models:
            return number  # a loaded number needs no registry round trip
        key = (name, wanted)
        hit = self._resolved.get(key)
        if hit is not None:
            if time.monotonic() - hit.at < self.resolve_ttl_s:
                return hit.number
            if not self.registry.ok:  # known down: no waiting, re-check in the background
                self._renew(key)
                return hit.number
        try:
            return await self._ask(key)
        except RegistryUnavailableError:
            if hit is None:
                raise
            return hit.number  # the last answer (_call_registry logged it as stale)

    async def get(self, name: str, version: str | int = "latest") -> LoadedModel:
        """The loaded model for a name and version spec, loading it once if needed.

        Raises:
            ModelNotFoundError: unknown name, version or alias.
            RegistryUnavailableError: the registry did not answer in time.
        """
        key = (name, await self.resolve(name, version))
        model = self._touch(key)
        if model is not None:
            return model
        task = self._pending.get(key)
        if task is None:  # concurrent requests for one new version share a single load
            task = asyncio.ensure_future(asyncio.to_thread(self._loader, name, key[1]))
            self._pending[key] = task
            task.add_done_callback(lambda _: self._pending.pop(key, None))
        try:
            forecaster, _ = await asyncio.wait_for(asyncio.shield(task), LOAD_TIMEOUT_S)
        except CLIENT_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds when unreachable
            message = describe_registry_error(exc, LOAD_TIMEOUT_S)
            raise RegistryUnavailableError(f"loading {name} v{key[1]}: {message}") from None
        model = self._models.get(key) or LoadedModel(name, key[1], forecaster)
        self._models[key] = model
        self._models.move_to_end(key)
        self._evict()
        return model

    def _touch(self, key: tuple[str, int]) -> LoadedModel | None:
        model = self._models.get(key)
        if model is not None:
            self._models.move_to_end(key)
        return model

    def _renew(self, key: tuple[str, str]) -> None:
        """Re-resolve in the background; while the registry fails, at most every
        REGISTRY_RETRY_S."""
        failed_lately = time.monotonic() - self.registry.last_failure < REGISTRY_RETRY_S
        if key in self._asking or (failed_lately and not self.registry.ok):
            return
        task = asyncio.ensure_future(self._ask(key))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # seen, not raised

    async def _ask(self, key: tuple[str, str]) -> int:
        """One registry call per spec at a time, with a deadline; records what it showed."""
        future = self._asking.get(key)
        if future is None:
            future = asyncio.ensure_future(self._call_registry(key))
            self._asking[key] = future
            future.add_done_callback(lambda _: self._asking.pop(key, None))
        return await asyncio.shield(future)

    async def _call_registry(self, key: tuple[str, str]) -> int:
        # The thread cannot be cancelled: MLflow's own HTTP timeout ends it (deployments.replica)
        call = asyncio.to_thread(self._resolver, *key)
        try:
            mv = await asyncio.wait_for(call, self.registry_timeout_s)
        except CLIENT_ERRORS:
            self.registry.answered()
            self._resolved.pop(key, None)  # e.g. an alias deleted: stop serving its old target
            raise
        except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds when unreachable
            self.registry.failed(describe_registry_error(exc, self.registry_timeout_s))
            if key in self._resolved and key not in self._stale:
                self._stale.add(key)
                log.warning(
                    "serving %s@%s as v%d, its last resolution, while the registry is down",
                    *key,
                    self._resolved[key].number,
                )
            raise RegistryUnavailableError(self.registry.message) from None
        self.registry.answered()
        self._stale.discard(key)
        number = int(mv.version)
        self._resolved[key] = _Resolution(number, time.monotonic())
        return number

    def _evict(self) -> None:
        while len(self._models) > max(self.capacity, 1):
            self._models.popitem(last=False)
