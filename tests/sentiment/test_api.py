"""The sentiment parts of the HTTP API on the default application (`build_app()` with every
default but the news file, as serve_config.yaml and `make run` serve it: sentiment is on):
the guide's HTTP example with `include_sentiment: True`, /predict with include_sentiment, POST
/api/v1/ml/signal, the scorer's batched scoring, and bad headlines. Every number is recomputed
locally from the same models."""

from __future__ import annotations

import asyncio
import socket

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
import ray
from ray import serve
from ray.serve._private.api import serve_start

from deployments.app import AppArgs, build_app
from sentiment.aggregate import AggregateSettings, aggregate_scores
from signals import HybridWeights, combine_signal
from training.data import load_data
from training.registry import resolve_version
from training.tracking import load_model

PREDICT, SIGNAL = "/api/v1/ml/predict", "/api/v1/ml/signal"
GUIDE_MODEL = "lstm_price_forecast"  # the default model, and the name the guide's request asks for
TITLES = [
    "Bitcoin ETF approved by the SEC",
    "Exchange hacked, withdrawals halted",
    "Bitcoin trades flat ahead of the Fed",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def guide_model(store, forecaster_name):
    """The package's tiny forecaster registered again under the guide's (the default) name."""
    mv = resolve_version(forecaster_name, "latest")
    client = mlflow.MlflowClient()
    client.create_registered_model(GUIDE_MODEL)
    client.create_model_version(GUIDE_MODEL, mv.source, run_id=mv.run_id)
    return GUIDE_MODEL


@pytest.fixture(scope="module")
def app(store, trained, guide_model, tmp_path_factory):
    news = tmp_path_factory.mktemp("news") / "news.csv"
    fresh = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=1)).isoformat()
    news.write_text(
        f"published_at,symbol,title\n{fresh},ETH/USDT,Ether rallies on upgrade\n"
        "2021-01-01T00:00:00Z,DOGE/USDT,An old dog headline\n"
    )
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = _free_port()
    try:
        serve_start(http_options={"host": "127.0.0.1", "port": port})
        args = AppArgs(sentiment_settings={"news_file": str(news)})  # the rest: defaults
        serve.run(build_app(args), name="sentiment_api", route_prefix="/")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            yield http
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def windows(forecaster_name):
    forecaster, _ = load_model(forecaster_name)
    values = load_data("BTC/USDT", data_path="sample", days_back=10).to_numpy()
    t = forecaster.sequence_length
    return [values[i : i + t].tolist() for i in (0, 40)]


def _expected_sentiment(analyzer, titles):
    rows = analyzer.analyze(titles)  # undated headlines count as published now: age 0
    return aggregate_scores(
        [r["score"] for r in rows],
        [r["confidence"] for r in rows],
        [0.0] * len(rows),
        AggregateSettings(),
    )


def test_predict_with_sentiment_adds_the_aggregate(app, analyzer, windows):
    body = {
        "symbol": "BTC/USDT",
        "sequences": windows,
        "include_sentiment": True,
        "headlines": TITLES[:2] + [{"title": TITLES[2], "published_at": None}],
    }
    resp = app.post(PREDICT, json=body)
    assert resp.status_code == 200, resp.text
    sentiment = resp.json()["sentiment"]
    score, confidence, n = _expected_sentiment(analyzer, TITLES)
    assert sentiment["score"] == pytest.approx(score, abs=1e-5)
    assert sentiment["confidence"] == pytest.approx(confidence, abs=1e-5)
    assert sentiment["n_headlines"] == n == 3 and sentiment["source"] == "request"
    assert len(resp.json()["predictions"]) == 2


def test_news_file_and_no_news(app, windows):
    eth = app.post(
        PREDICT, json={"symbol": "ETH/USDT", "sequences": windows, "include_sentiment": True}
    ).json()["sentiment"]
    assert eth["n_headlines"] == 1 and eth["source"] == "file:news.csv" and eth["confidence"] > 0
    for symbol, note in (("BTC/USDT", "no headlines"), ("DOGE/USDT", "1 outside that window")):
        none = app.post(
            PREDICT, json={"symbol": symbol, "sequences": windows, "include_sentiment": True}
        ).json()["sentiment"]
        assert (none["score"], none["confidence"], none["n_headlines"]) == (0.0, 0.0, 0)
        assert note in none["note"]


def test_answers_name_the_headlines_the_window_dropped(app, windows):
    """Issue 13: a headline older than the 72 h window, or after as_of, is named with why."""
    now = pd.Timestamp.now(tz="UTC")
    old, future = now - pd.Timedelta(hours=100), now + pd.Timedelta(hours=2)
    headlines = [
        TITLES[0],
        {"title": TITLES[1], "published_at": old.isoformat()},
        {"title": TITLES[2], "published_at": future.isoformat()},
    ]
    body = {"symbol": "BTC/USDT", "sequences": windows[:1], "headlines": headlines}
    signal = app.post(SIGNAL, json=body)
    assert signal.status_code == 200, signal.text
    sentiment = signal.json()["sentiment"]
    assert sentiment["n_headlines"] == 1
    dropped = sentiment["dropped"]
    assert (dropped["too_old"], dropped["after_as_of"]) == (1, 1)
    assert [(d["title"], d["reason"]) for d in dropped["headlines"]] == [
        (TITLES[2], "published after as_of"),
        (TITLES[1], "older than the 72 h window before as_of"),
    ]
    assert pd.Timestamp(dropped["headlines"][1]["published_at"]) == old
    doge = app.post(
        PREDICT, json={"symbol": "DOGE/USDT", "sequences": windows, "include_sentiment": True}
    ).json()["sentiment"]  # the news file's only DOGE headline is from 2021
    assert doge["dropped"]["too_old"] == 1
    assert doge["dropped"]["headlines"][0]["title"] == "An old dog headline"


def test_signal_is_combine_signal_of_forecast_and_sentiment(app, windows, forecaster_name):
    body = {"symbol": "BTC/USDT", "sequences": windows, "headlines": TITLES, "min_confidence": 0.0}
    resp = app.post(SIGNAL, json=body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    forecaster, _ = load_model(forecaster_name)
    forecast = forecaster.predict(np.asarray(windows))
    sentiment = out["sentiment"]
    assert sentiment["n_headlines"] == 3
    for row, signal in zip(forecast.itertuples(), out["signals"], strict=True):
        expected = combine_signal(
            row.predicted_return,
            row.lower,
            row.upper,
            row.prediction,
            sentiment["score"],
            sentiment["confidence"],
            HybridWeights(min_confidence=0.0),
        )
        assert signal["signal"] == expected["signal"]
        for key in ("confidence", "ml_score", "price_prediction", "weights"):
            assert signal[key] == pytest.approx(expected[key], rel=1e-4), key
    no_news = app.post(SIGNAL, json={**body, "headlines": []}).json()
    assert no_news["sentiment"]["confidence"] == 0.0
    assert no_news["signals"][0]["weights"] == {"ml": 1.0, "sentiment": 0.0}


def test_batched_scoring_matches_one_by_one(app, analyzer):
    handle = serve.get_deployment_handle("SentimentScorer", "sentiment_api")
    fresh = [
        "Miner revenue hits a record",
        "Regulator sues a large exchange",
        "Stablecoin briefly loses its peg",
        "Ether fees fall to a yearly low",
    ]

    async def score_all():  # concurrent calls: batched into shared forward passes
        return await asyncio.gather(*(handle.score.remote([t]) for t in fresh))

    batched = [rows[0] for rows in asyncio.run(score_all())]
    again = handle.score.remote(fresh[::-1]).result()[::-1]  # now from the score cache
    for got, cached, want in zip(batched, again, analyzer.analyze(fresh), strict=True):
        assert got["label"] == want["label"] == cached["label"]
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
        assert cached["score"] == got["score"]


@pytest.mark.parametrize(
    ("headlines", "status", "fragment"),
    [
        ([""], 422, "headlines[0]: empty headline"),
        (["ok", "x" * 1001], 422, "headlines[1]: headline of 1001 characters"),
        (["ok"] * 201, 422, "200"),
    ],
)
def test_bad_headlines_are_422(app, windows, headlines, status, fragment):
    resp = app.post(
        PREDICT,
        json={
            "symbol": "BTC/USDT",
            "sequences": windows,
            "include_sentiment": True,
            "headlines": headlines,
        },
    )
    assert resp.status_code == status
    assert fragment in resp.text


@pytest.mark.parametrize(
    ("change", "status", "kind", "fragment"),
    [
        ({"model_name": "x'y"}, 404, "model_not_found", "no registered model"),
        ({"model_version": "²"}, 422, "invalid_request", "model_version"),
        ({"model_version": "no-such-alias"}, 404, "model_not_found", "no version or alias"),
        ({"bar": 1.7e308}, 422, "invalid_request", "close 1.7e+308 at window 0, bar 2"),
        ({"bar": "94000"}, 422, "invalid_request", "sequences[0][2][3]"),
        ({"wild": True}, (200, 422), "invalid_sequences", "window 0"),
    ],
)
def test_hostile_signal_requests_are_4xx_then_signal_serves(
    app, windows, change, status, kind, fragment
):
    """Issue 12, findings 1-3 and 8 on /signal with sentiment: never a 500 or a 503, and a
    window whose forecast is allowed but extreme gets finite numbers or a 422."""
    good = {"symbol": "BTC/USDT", "sequences": windows[:1], "headlines": TITLES}
    body = {**good, **{k: v for k, v in change.items() if k.startswith("model_")}}
    if "bar" in change:
        body["sequences"] = [[list(b) for b in windows[0]]]
        body["sequences"][0][2][3] = change["bar"]
    if "wild" in change:
        t = len(windows[0])
        body["sequences"] = [[[p, p, p, p, 1e14] for p in ([1e-9, 1e14] * t)[:t]]]
    resp = app.post(SIGNAL, json=body)
    if resp.status_code == 200:
        assert status == (200, 422), resp.text
        assert np.isfinite([s["combined_score"] for s in resp.json()["signals"]]).all()
    else:
        assert resp.status_code in (status if isinstance(status, tuple) else (status,)), resp.text
        assert resp.json()["error"] == kind and fragment in resp.json()["message"], resp.text
    assert app.post(SIGNAL, json=good).status_code == 200


def test_default_app_serves_sentiment():
    assert AppArgs().with_sentiment and AppArgs().model_name == GUIDE_MODEL


def test_guide_http_example_with_sentiment(app, guide_model):
    """The guide's HTTP example, verbatim but for the host (the client's base URL)."""
    forecaster, _ = load_model(guide_model)
    bars = load_data("BTC/USDT", days_back=10, data_path="sample")
    window = bars[["open", "high", "low", "close", "volume"]].to_numpy()[
        -forecaster.sequence_length :
    ]
    sequences = [window.tolist()]

    response = app.post(
        "/api/v1/ml/predict",
        json={
            "symbol": "BTC/USDT",
            "sequences": sequences,  # Your input sequences
            "model_name": "lstm_price_forecast",
            "model_version": "latest",
            "include_sentiment": True,  # Optional sentiment integration
        },
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
    health = app.get("/api/v1/health").json()
    assert health["sentiment_enabled"] is True and health["ready"]
