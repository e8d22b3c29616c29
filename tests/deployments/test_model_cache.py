"""ModelCache against a fake registry that can hang or fail (issue 12, finding 5): loaded
versions never wait for the registry, unloaded ones fail within the deadline, concurrent
requests share one registry call, and what went wrong is said in words."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest

from deployments.messages import RegistryUnavailableError
from deployments.model_cache import ModelCache
from training.registry import ModelNotFoundError

DEADLINE_S = 0.3


class FakeRegistry:
    """resolve_version and load_model stand-ins: `latest` is `self.latest`; `down` makes
    every call raise ConnectionError, `hang` makes it block until released."""

    def __init__(self) -> None:
        self.latest, self.down, self.calls = 1, False, 0
        self.gone: set[str] = set()  # aliases deleted meanwhile
        self.hang = threading.Event()
        self.release = threading.Event()

    def resolve(self, name: str, version: str):
        self.calls += 1
        if self.hang.is_set():
            self.release.wait(10)
        if self.down:
            raise ConnectionError("Failed to establish a new connection: Connection refused")
        if name != "m" or version not in {"latest", "1", "2", "prod"} - self.gone:
            raise ModelNotFoundError(f"no {name}@{version}")
        number = {"latest": self.latest, "prod": 1}.get(version) or int(version)
        return SimpleNamespace(version=str(number))

    def load(self, name: str, version: int):
        return SimpleNamespace(device="cpu", version=version), None


def _cache(registry: FakeRegistry, ttl: float = 0.0) -> ModelCache:
    return ModelCache(
        capacity=4,
        resolve_ttl_s=ttl,
        resolver=registry.resolve,
        loader=registry.load,
        registry_timeout_s=DEADLINE_S,
    )


async def _settle() -> None:
    for _ in range(20):  # let background renewals run
        await asyncio.sleep(0.01)


def test_loaded_versions_keep_serving_while_the_registry_hangs():
    registry = FakeRegistry()

    async def scenario():
        cache = _cache(registry)
        assert (await cache.get("m", "latest")).version == 1
        registry.hang.set()  # every registry call now blocks
        start = time.perf_counter()
        for _ in range(20):  # ttl 0: each peek is due for renewal, none waits for it
            assert cache.peek("m", "latest").version == 1
            assert cache.peek("m", 1).version == 1
        assert time.perf_counter() - start < 0.1
        await asyncio.sleep(DEADLINE_S + 0.1)  # the background renewal gives up
        assert not cache.registry.ok and "did not answer within 0.3 s" in cache.registry.message
        assert cache.stale == [{"name": "m", "version": "latest", "resolved_version": 1}]
        start = time.perf_counter()
        with pytest.raises(RegistryUnavailableError, match="did not answer within"):
            await cache.get("m", 2)  # not loaded: waits for the registry, within the deadline
        assert time.perf_counter() - start < DEADLINE_S + 0.2
        registry.hang.clear()
        registry.release.set()
        await asyncio.sleep(0.05)
        registry.latest = 2
        assert (await cache.get("m", 2)).version == 2  # back: loads again
        assert cache.registry.ok and cache.registry.message is None
        cache.peek("m", "latest")  # renewal in the background picks up the new latest
        await _settle()
        assert cache.peek("m", "latest").version == 2 and cache.stale == []

    asyncio.run(scenario())


def test_a_registry_that_refuses_is_named_in_words():
    registry = FakeRegistry()

    async def scenario():
        cache = _cache(registry)
        registry.down = True
        with pytest.raises(RegistryUnavailableError) as caught:
            await cache.get("m", "latest")
        assert "is not reachable (connection refused)" in str(caught.value)
        assert "ConnectionError(" not in str(caught.value)

    asyncio.run(scenario())


def test_concurrent_requests_share_one_registry_call():
    registry = FakeRegistry()

    async def scenario():
        cache = _cache(registry, ttl=60.0)
        models = await asyncio.gather(*(cache.get("m", "latest") for _ in range(10)))
        assert {m.version for m in models} == {1} and registry.calls == 1
        registry.hang.set()
        results = await asyncio.gather(
            *(cache.get("m", "prod") for _ in range(10)), return_exceptions=True
        )
        assert all(isinstance(r, RegistryUnavailableError) for r in results)
        assert registry.calls == 2  # one call for the ten, given up together
        registry.release.set()

    asyncio.run(scenario())


def test_renewal_that_finds_the_alias_gone_stops_serving_it():
    registry = FakeRegistry()

    async def scenario():
        cache = _cache(registry)
        await cache.get("m", "prod")
        registry.gone.add("prod")
        assert cache.peek("m", "prod") is not None  # served once more while renewing
        await _settle()
        assert cache.peek("m", "prod") is None  # then the caller asks and gets the 404
        with pytest.raises(ModelNotFoundError):
            await cache.get("m", "prod")

    asyncio.run(scenario())
