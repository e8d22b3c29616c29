"""The guide's HTTP example, verbatim but for the host, against the default application
(`build_app()` with every default, as serve_config.yaml and `make run` serve it): sentiment is
on by default, so `include_sentiment: True` is answered, not refused."""

from __future__ import annotations

import socket

import httpx
import mlflow
import numpy as np
import pytest
import ray
from ray import serve
from ray.serve._private.api import serve_start

from deployments.app import AppArgs, build_app
from training.data import load_data
from training.registry import resolve_version
from training.tracking import load_model

GUIDE_MODEL = "lstm_price_forecast"  # the name the guide's request asks for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def guide_model(store, forecaster_name):
    """The package's tiny forecaster registered again under the guide's model name."""
    mv = resolve_version(forecaster_name, "latest")
    client = mlflow.MlflowClient()
    client.create_registered_model(GUIDE_MODEL)
    client.create_model_version(GUIDE_MODEL, mv.source, run_id=mv.run_id)
    return GUIDE_MODEL


@pytest.fixture(scope="module")
def default_app(store, trained, guide_model):
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = _free_port()
    try:
        serve_start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(), name="default_app", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_default_app_serves_sentiment():
    assert AppArgs().with_sentiment and AppArgs().model_name == GUIDE_MODEL


def test_guide_http_example_with_sentiment(default_app, guide_model):
    forecaster, _ = load_model(guide_model)
    bars = load_data("BTC/USDT", days_back=10, data_path="sample")
    window = bars[["open", "high", "low", "close", "volume"]].to_numpy()[
        -forecaster.sequence_length :
    ]
    sequences = [window.tolist()]

    response = httpx.post(
        f"{default_app}/api/v1/ml/predict",
        json={
            "symbol": "BTC/USDT",
            "sequences": sequences,  # Your input sequences
            "model_name": "lstm_price_forecast",
            "model_version": "latest",
            "include_sentiment": True,  # Optional sentiment integration
        },
        timeout=120,
    )
    assert response.status_code == 200, response.text

    result = response.json()
    print(f"Prediction: {result['predictions'][0]}")
    print(f"Confidence: {result['confidence_intervals'][0]}")
    print(f"Feature Importance: {result['feature_importance']}")

    expected = forecaster.predict(np.asarray(sequences))
    assert result["predictions"][0] == pytest.approx(expected["prediction"][0], rel=1e-9)
    interval = result["confidence_intervals"][0]
    assert interval["lower"] == pytest.approx(expected["lower"][0], rel=1e-9)
    assert interval["upper"] == pytest.approx(expected["upper"][0], rel=1e-9)
    assert interval["confidence"] == forecaster.confidence
    assert sum(result["feature_importance"].values()) == pytest.approx(1.0)
    assert {"score", "confidence", "n_headlines", "source"} <= result["sentiment"].keys()
    health = httpx.get(f"{default_app}/api/v1/health", timeout=60).json()
    assert health["sentiment_enabled"] is True and health["ready"]
