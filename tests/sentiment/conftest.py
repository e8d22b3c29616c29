"""Fixtures for the sentiment tests: one throwaway MLflow store for the package, holding one tiny
sentiment model trained by the real training code (128 headlines, 32 tokens) and, on demand, a
tiny price forecaster."""

from __future__ import annotations

import os

import pytest

TINY = {"limit": 128, "eval_limit": 32, "max_length": 32, "batch_size": 16, "epochs": 1.0}


@pytest.fixture(scope="package")
def store(tmp_path_factory):
    """Point MLflow at a SQLite store in a temp dir for the package, then restore.

    mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID too, so that is restored as well.
    """
    import mlflow

    from training.tracking import setup_tracking

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "HF_HUB_OFFLINE")
    saved = {k: os.environ.get(k) for k in keys}
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{db}"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    uri = setup_tracking()
    yield uri
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"] or "")


@pytest.fixture(scope="package")
def trained(store):
    """The tiny `news_sentiment` model, trained and registered once for the package."""
    from sentiment.train import SentimentTrainSettings, train_sentiment

    return train_sentiment(SentimentTrainSettings(**TINY, experiment_name="sentiment_tests"))


@pytest.fixture(scope="package")
def analyzer(trained):
    from sentiment import SentimentAnalyzer

    return SentimentAnalyzer.from_registry("news_sentiment", trained["version"])


@pytest.fixture(scope="package")
def forecaster_name(store):
    """A tiny registered LSTM price forecaster (a few seconds)."""
    from training.train import TrainSettings, train_model

    name = "tiny_price_forecast"
    train_model(
        TrainSettings(
            days_back=60,
            model_name=name,
            experiment_name="sentiment_tests",
            overrides={"epochs": 1, "sequence_length": 32, "hidden_size": 16},
        )
    )
    return name
