"""A bounded LRU cache of registered forecasters, and a short-lived cache of version resolutions.

Both hide MLflow round trips from the request path: `latest` and aliases are re-resolved at
most every `resolve_ttl_s`, loaded versions stay in memory until evicted. Blocking MLflow calls
run in a worker thread so the replica's event loop keeps serving other requests meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from training.bundle import Forecaster
from training.registry import parse_version, resolve_version
from training.tracking import load_model


@dataclass(frozen=True)
class LoadedModel:
    """A forecaster with the registry coordinates it was loaded from."""

    name: str
    version: int
    forecaster: Forecaster


class ModelCache:
    """LRU of loaded forecasters keyed by (name, version number).

    Args:
        capacity: most versions kept in memory at once.
        resolve_ttl_s: how long `latest` / an alias keeps resolving to the same number.
        resolver: (name, version) -> ModelVersion; raises ModelNotFoundError.
        loader: (name, version number) -> (Forecaster, ModelVersion).
    """

    def __init__(
        self,
        capacity: int = 4,
        resolve_ttl_s: float = 10.0,
        resolver: Callable = resolve_version,
        loader: Callable = load_model,
    ) -> None:
        self.capacity = capacity
        self.resolve_ttl_s = resolve_ttl_s
        self._resolver = resolver
        self._loader = loader
        self._models: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._resolved: dict[tuple[str, str], tuple[int, float]] = {}
        self._pending: dict[tuple[str, int], asyncio.Task] = {}

    def configure(self, capacity: int, resolve_ttl_s: float) -> None:
        """Apply new limits (from user_config); shrinking evicts the least recently used."""
        self.capacity = capacity
        self.resolve_ttl_s = resolve_ttl_s
        self._resolved.clear()
        self._evict()

    @property
    def loaded(self) -> list[tuple[str, int]]:
        """(name, version) of the models in memory, least recently used first."""
        return list(self._models)

    async def resolve(self, name: str, version: str | int) -> int:
        """The version number meant by `latest`, a number or an alias."""
        wanted, number = str(version).strip(), parse_version(version)
        if number is not None and (name, number) in self._models:
            return number  # a loaded number needs no registry round trip
        hit = self._resolved.get((name, wanted))
        if hit is not None and time.monotonic() - hit[1] < self.resolve_ttl_s:
            return hit[0]
        mv = await asyncio.to_thread(self._resolver, name, wanted)
        number = int(mv.version)
        self._resolved[(name, wanted)] = (number, time.monotonic())
        return number

    async def get(self, name: str, version: str | int = "latest") -> LoadedModel:
        """The loaded model for a name and version spec, loading it once if needed.

        Raises:
            ModelNotFoundError: unknown name, version or alias.
        """
        key = (name, await self.resolve(name, version))
        model = self._models.get(key)
        if model is not None:
            self._models.move_to_end(key)
            return model
        task = self._pending.get(key)
        if task is None:  # concurrent requests for one new version share a single load
            task = asyncio.ensure_future(asyncio.to_thread(self._loader, name, key[1]))
            self._pending[key] = task
            task.add_done_callback(lambda _: self._pending.pop(key, None))
        forecaster, _ = await asyncio.shield(task)
        model = self._models.get(key) or LoadedModel(name, key[1], forecaster)
        self._models[key] = model
        self._models.move_to_end(key)
        self._evict()
        return model

    def _evict(self) -> None:
        while len(self._models) > max(self.capacity, 1):
            self._models.popitem(last=False)
