"""The prediction API over real HTTP, against Serve apps on one local Ray instance per module.

Two tiny LSTMs are registered in a throwaway MLflow store (v1 aliased `production`, v2 latest);
every answer is compared with the registered pyfunc's own output for the same windows.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import mlflow
import numpy as np
import pytest
import ray
import yaml
from ray import serve
from ray.serve._private.api import serve_start
from ray.serve.schema import ServeDeploySchema

from deployments.app import AppArgs, model_actor_options
from deployments.model_cache import ModelCache
from training.data import PROJECT_ROOT, load_data
from training.experiment import train_model
from training.models.lstm import LSTMModelConfig
from training.registry import promote
from training.specs import DataSpec, TrainSettings
from training.tracking import load_model

CONFIG_FILE = PROJECT_ROOT / "serve_config.yaml"
NAME = "serving_test_lstm"
SEQ = 32
KEY = "test-key-5f2c"
PREDICT = "/api/v1/ml/predict"
# train_model's mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID: restored with the URI
ENV_KEYS = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")
DEPLOY_TIMEOUT_S = 300


@dataclass
class Stack:
    http: httpx.Client
    windows: list  # three real 32-bar BTC/USDT windows
    deploy: Callable[..., None]  # (default_version) -> redeploy both apps from the config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_config(uri: str, default_version: str = "latest") -> ServeDeploySchema:
    """serve_config.yaml pointed at the test registry, plus a copy of the app requiring a key."""
    config = yaml.safe_load(CONFIG_FILE.read_text())
    app = config["applications"][0]
    app["args"].update(
        model_name=NAME,
        tracking_uri=uri,
        max_sequences=4,
        max_body_bytes=64 * 1024,
        model_num_cpus=0.25,
        ingress_num_cpus=0.1,
        max_replicas=1,
        # answers, not deadlines (test_faults): /models' SQLite reads can pass the 5 s default
        # on two busy cores
        registry_timeout_s=30.0,
        api_key_env="MLTRADE_SERVING_TEST_UNSET",
        with_sentiment=False,  # the switch that turns sentiment off: 501 for include_sentiment
    )
    app["deployments"][0]["user_config"].update(
        model_name=NAME, default_version=default_version, resolve_ttl_s=0.0
    )
    secured = copy.deepcopy(app)
    secured.update(
        name="secured", route_prefix="/secured", runtime_env={"env_vars": {"MLTRADE_API_KEY": KEY}}
    )
    secured["args"]["api_key_env"] = "MLTRADE_API_KEY"
    # with the scorer, whose registry has no sentiment model: forecasts work, sentiment is 503
    secured["args"].update(with_sentiment=True, sentiment_num_cpus=0.1)
    offline = copy.deepcopy(app)  # a registry that refuses connections, failing fast
    offline.update(
        name="offline",
        route_prefix="/offline",
        runtime_env={
            "env_vars": {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
        },
    )
    offline["args"]["tracking_uri"] = "http://127.0.0.1:9"
    return ServeDeploySchema.model_validate({"applications": [app, secured, offline]})


def wait_running(names: list[str], timeout_s: float = DEPLOY_TIMEOUT_S) -> None:
    """Wait for the apps to run: Serve's own blocking deploy gives up after 60 s, too short
    for replicas importing torch on a busy 2-core machine."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        apps = serve.status().applications
        if all(name in apps and apps[name].status == "RUNNING" for name in names):
            return
        time.sleep(0.5)
    raise TimeoutError(f"Serve apps {names} not running after {timeout_s:g}s: {apps}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving")
    saved_env = {k: os.environ.get(k) for k in ENV_KEYS}
    saved_uri = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp}/mlflow.db"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("serving_tests", artifact_location=(tmp / "artifacts").as_uri())
    for seed in (1, 2):
        train_model(
            TrainSettings(
                data=DataSpec(days_back=60),
                config=LSTMModelConfig(epochs=1, sequence_length=SEQ, hidden_units=16, seed=seed),
                model_name=NAME,
                experiment_name="serving_tests",
            )
        )
    promote(f"models:/{NAME}/1", NAME, "production")
    bars = load_data("BTC/USDT", days_back=10, data_path="sample")
    values = bars[["open", "high", "low", "close", "volume"]].to_numpy()
    windows = [values[i : i + SEQ].tolist() for i in (0, 50, 100)]

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = _free_port()
    try:
        # The config path of `serve deploy` (not serve.run): a user_config edit then updates
        # running replicas in place instead of replacing them.
        client = serve_start(http_options={"host": "127.0.0.1", "port": port})

        def deploy(default_version: str = "latest") -> None:
            config = serve_config(uri, default_version)
            client.deploy_apps(config, _blocking=False)
            wait_running([app.name for app in config.applications])

        deploy()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            yield Stack(http, windows, deploy)
    finally:
        serve.shutdown()
        ray.shutdown()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        mlflow.set_tracking_uri(saved_uri)


def pyfunc_output(version: int, windows) -> tuple:
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/{version}")
    forecaster = model.unwrap_python_model().forecaster
    return model.predict(np.asarray(windows)), forecaster


def assert_matches_pyfunc(body: dict, version: int, windows) -> None:
    frame, forecaster = pyfunc_output(version, windows)
    assert body["model_name"] == NAME and body["model_version"] == version
    np.testing.assert_allclose(body["predictions"], frame["prediction"], rtol=1e-9)
    # float32 forwards over differently sized batches agree to ~1e-7 relative on the return
    np.testing.assert_allclose(body["predicted_returns"], frame["predicted_return"], atol=1e-9)
    intervals = body["confidence_intervals"]
    np.testing.assert_allclose([i["lower"] for i in intervals], frame["lower"], rtol=1e-9)
    np.testing.assert_allclose([i["upper"] for i in intervals], frame["upper"], rtol=1e-9)
    assert {i["confidence"] for i in intervals} == {forecaster.confidence}
    expected = forecaster.feature_importance(windows)
    assert body["feature_importance"].keys() == expected.keys()
    np.testing.assert_allclose(
        list(body["feature_importance"].values()), list(expected.values()), rtol=1e-4, atol=1e-7
    )
    assert body["drift"] == forecaster.drift(windows)


def test_predict_matches_pyfunc(stack):
    r = stack.http.post(PREDICT, json={"symbol": "BTC/USDT", "sequences": stack.windows})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_matches_pyfunc(body, 2, stack.windows)
    assert body["symbol"] == "BTC/USDT"
    assert len(body["predictions"]) == 3 and body["latency_ms"] > 0
    assert abs(sum(body["feature_importance"].values()) - 1) < 1e-6
    assert body["drift"]["threshold"] > 0 and "sentiment" not in body


@pytest.mark.parametrize(
    ("version", "expected"),
    [("1", 1), (1, 1), ("2", 2), ("latest", 2), ("production", 1), (None, 2)],
)
def test_version_resolution(stack, version, expected):
    payload = {"sequences": stack.windows[:1], "model_name": NAME, "model_version": version}
    r = stack.http.post(PREDICT, json=payload)
    assert r.status_code == 200, r.text
    assert_matches_pyfunc(r.json(), expected, stack.windows[:1])


def test_concurrent_requests_batch_per_version(stack):
    """Concurrent requests for two versions plus a bad one: each answer is its own."""
    jobs = [({"sequences": [w], "model_version": v}, v) for v in (1, 2) for w in stack.windows]
    bad = {"sequences": [stack.windows[0][:-1]]}
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(stack.http.post, PREDICT, json=p) for p, _ in jobs]
        bad_future = pool.submit(stack.http.post, PREDICT, json=bad)
        for future, (payload, version) in zip(futures, jobs, strict=True):
            r = future.result()
            assert r.status_code == 200, r.text
            assert_matches_pyfunc(r.json(), version, payload["sequences"])
        assert bad_future.result().status_code == 422


def _bar_changed(windows, i, t, k, value):
    out = json.loads(json.dumps(windows))
    out[i][t][k] = value
    return out


def _cases(w):
    one = [w[0]]
    return {
        "wrong nesting": ({"sequences": w[0]}, 422, "sequences[0][0]"),
        "too short": ({"sequences": [w[0][:-1]]}, 422, f"[n, {SEQ}, 5]"),
        "too long": ({"sequences": [w[0] + [w[0][-1]]]}, 422, f"got [1, {SEQ + 1}, 5]"),
        "ragged": ({"sequences": [w[0], w[1][:-2]]}, 422, "sequences[1] has 30 bars"),
        "bar of 4": (
            {"sequences": [w[0][:2] + [w[0][2][:4]] + w[0][3:]]},
            422,
            "sequences[0][2] has 4 values",
        ),
        "bars of 6": ({"sequences": [[b + [1.0] for b in w[0]]]}, 422, "has 6 values"),
        "non-numeric": (
            {"sequences": _bar_changed(one, 0, 3, 2, "abc")},
            422,
            "sequences[0][3][2]",
        ),
        "null value": ({"sequences": _bar_changed(one, 0, 3, 2, None)}, 422, "sequences[0][3][2]"),
        "NaN": (
            json.dumps({"sequences": _bar_changed(one, 0, 3, 1, float("nan"))}),
            422,
            "NaN or inf value at window 0, bar 3",
        ),
        "inf": (
            json.dumps({"sequences": _bar_changed(one, 0, 4, 4, float("inf"))}),
            422,
            "NaN or inf value at window 0, bar 4",
        ),
        "zero price": (
            {"sequences": _bar_changed(one, 0, 5, 3, 0.0)},
            422,
            "non-positive price at window 0, bar 5",
        ),
        "negative price": (
            {"sequences": _bar_changed(one, 0, 6, 0, -5.0)},
            422,
            "non-positive price at window 0, bar 6",
        ),
        "high below low": (
            {"sequences": _bar_changed(one, 0, 7, 1, w[0][7][2] * 0.99)},
            422,
            "high below low at window 0, bar 7",
        ),
        "negative volume": (
            {"sequences": _bar_changed(one, 0, 8, 4, -1.0)},
            422,
            "negative volume at window 0, bar 8",
        ),
        "no sequences": ({"sequences": []}, 422, "sequences: List should have at least 1 item"),
        "missing sequences": ({"symbol": "BTC/USDT"}, 422, "sequences: Field required"),
        "unknown field": ({"sequences": one, "sequence": one}, 422, "Extra inputs"),
        "invalid json": ('{"sequences": [[[1, 2', 422, "not valid JSON"),
        "too many sequences": (
            {"sequences": [w[0]] * 5},
            413,
            "5 sequences in one request; the limit is 4",
        ),
        "oversized body": (
            {"sequences": one, "headlines": ["x" * 900] * 80},
            413,
            "exceeds the limit of 65536 bytes",
        ),
        "unknown model": (
            {"sequences": one, "model_name": "no_such_model"},
            404,
            "no registered model 'no_such_model'",
        ),
        "unknown version": (
            {"sequences": one, "model_version": 99},
            404,
            "has no version or alias '99'",
        ),
        "unknown alias": (
            {"sequences": one, "model_version": "staging"},
            404,
            "aliases ['production']",
        ),
        "sentiment without scorer": (
            {"sequences": one, "include_sentiment": True},
            501,
            "without the sentiment deployment",
        ),
    }


CASES = list(_cases([[[1.0] * 5 for _ in range(10)] for _ in range(2)]))


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_a_named_4xx(stack, case):
    payload, status, fragment = _cases(stack.windows)[case]
    if isinstance(payload, str):
        r = stack.http.post(PREDICT, content=payload, headers={"Content-Type": "application/json"})
    else:
        r = stack.http.post(PREDICT, json=payload)
    assert r.status_code == status, r.text
    body = r.json()
    assert fragment in body["message"], body
    assert body["error"]


def test_chunked_oversized_body_is_refused(stack):
    """No Content-Length: the limit is enforced on the bytes that arrive."""
    chunk = b" " * 16384

    def body():
        yield b'{"sequences": [[[1, 2, 1, 1, 1]]]'
        for _ in range(6):
            yield chunk
        yield b"}"

    r = stack.http.post(PREDICT, content=body(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert "exceeds the limit" in r.json()["message"]


def test_service_keeps_serving_after_bad_input(stack):
    r = stack.http.get("/api/v1/health")
    assert r.status_code == 200, r.text
    health = r.json()
    assert health["ready"] and health["registry_reachable"]
    assert health["default_model"]["resolved_version"] == 2
    assert {"name": NAME, "version": 2} in health["loaded_models"]
    assert health["torch_threads"] == 1 and health["sentiment_enabled"] is False
    assert stack.http.post(PREDICT, json={"sequences": stack.windows}).status_code == 200


def test_models_endpoint_lists_versions_aliases_metrics(stack):
    r = stack.http.get("/api/v1/ml/models")
    assert r.status_code == 200, r.text
    (model,) = [m for m in r.json() if m["name"] == NAME]
    assert model["aliases"] == {"production": "1"} or model["aliases"] == {"production": 1}
    by_version = {v["version"]: v for v in model["versions"]}
    assert set(by_version) == {1, 2}
    assert by_version[1]["aliases"] == ["production"]
    assert "mae" in by_version[2]["test_metrics"]
    missing = stack.http.get("/api/v1/ml/models", params={"name": "no_such_model"})
    assert missing.status_code == 404 and "no registered model" in missing.json()["message"]


def test_docs_and_unknown_routes(stack):
    assert "swagger" in stack.http.get("/docs").text.lower()
    spec = stack.http.get("/openapi.json").json()
    assert {"/api/v1/ml/predict", "/api/v1/ml/models", "/api/v1/health"} <= set(spec["paths"])
    r = stack.http.get("/api/v1/nothing")
    assert r.status_code == 404 and "see /docs" in r.json()["message"]


def test_signal_is_501_until_sentiment_is_bound(stack):
    r = stack.http.post("/api/v1/ml/signal", json={"sequences": stack.windows[:1]})
    assert r.status_code == 501, r.text
    assert r.json()["error"]


def test_api_key(stack):
    path = "/secured" + PREDICT
    payload = {"sequences": stack.windows[:1]}
    missing = stack.http.post(path, json=payload)
    assert missing.status_code == 401 and "API key" in missing.json()["message"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = stack.http.post(path, json=payload, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert stack.http.get("/secured/api/v1/ml/models").status_code == 401
    right = stack.http.post(path, json=payload, headers={"Authorization": f"Bearer {KEY}"})
    assert right.status_code == 200, right.text
    assert right.json()["model_version"] == 2
    assert stack.http.get("/secured/api/v1/health").status_code == 200  # health stays open


def test_scorer_without_a_registered_model_is_503_not_a_crash(stack):
    headers = {"Authorization": f"Bearer {KEY}"}
    payload = {"sequences": stack.windows[:1], "include_sentiment": True, "headlines": ["Hi"]}
    r = stack.http.post("/secured" + PREDICT, json=payload, headers=headers)
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "sentiment_unavailable"
    assert "python -m sentiment.train" in r.json()["message"]
    health = stack.http.get("/secured/api/v1/health").json()
    assert health["sentiment_enabled"] is True and health["ready"]


def test_unreachable_registry_is_503_not_a_crash(stack):
    health = stack.http.get("/offline/api/v1/health")
    assert health.status_code == 503
    assert health.json()["registry_reachable"] is False and not health.json()["ready"]
    r = stack.http.post("/offline" + PREDICT, json={"sequences": stack.windows[:1]})
    assert r.status_code == 503 and r.json()["error"] == "registry_unavailable", r.text
    models = stack.http.get("/offline/api/v1/ml/models")
    assert models.status_code == 503 and "not reachable" in models.json()["message"]


def test_user_config_swap_keeps_replicas(stack):
    """An edited user_config (serve deploy) reaches the running replica through reconfigure()."""
    before = stack.http.get("/api/v1/health").json()
    try:
        stack.deploy(default_version="production")
        r = stack.http.post(PREDICT, json={"sequences": stack.windows[:1]})
        assert r.status_code == 200, r.text
        assert_matches_pyfunc(r.json(), 1, stack.windows[:1])
        after = stack.http.get("/api/v1/health").json()
        assert after["replica"] == before["replica"]  # same replica, reconfigured in place
        assert after["default_model"]["resolved_version"] == 1
    finally:
        stack.deploy()
    r = stack.http.post(PREDICT, json={"sequences": stack.windows[:1]})
    assert r.json()["model_version"] == 2


def test_model_cache_is_bounded_and_loads_once(stack):
    loads = []

    def counting_loader(name, version):
        loads.append(version)
        return load_model(name, version)

    async def scenario():
        cache = ModelCache(capacity=1, resolve_ttl_s=60.0, loader=counting_loader)
        first = await asyncio.gather(*[cache.get(NAME, "production") for _ in range(3)])
        assert {m.version for m in first} == {1} and loads == [1]
        assert (await cache.get(NAME, "latest")).version == 2
        assert cache.loaded == [(NAME, 2)]  # v1 evicted
        assert (await cache.get(NAME, 2)).forecaster is (await cache.get(NAME, "latest")).forecaster
        assert loads == [1, 2]

    asyncio.run(scenario())


def test_gpu_share_only_when_the_cluster_has_gpus(monkeypatch):
    args = AppArgs(gpus_per_model_replica=0.25, model_num_cpus=0.5)
    monkeypatch.setattr("training.cluster.cluster_gpus", lambda: 0.0)
    assert model_actor_options(args) == {"num_cpus": 0.5, "num_gpus": 0.0}
    monkeypatch.setattr("training.cluster.cluster_gpus", lambda: 4.0)
    assert model_actor_options(args) == {"num_cpus": 0.5, "num_gpus": 0.25}
