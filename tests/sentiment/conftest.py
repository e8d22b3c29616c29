"""Fixtures for the sentiment tests: one throwaway MLflow store for the package, holding one tiny
sentiment model trained by the real training code (128 headlines, 32 tokens) and, on demand, a
tiny price forecaster."""

from __future__ import annotations

import pytest

from tests.conftest import isolated_tracking

TINY = {"limit": 128, "eval_limit": 32, "max_length": 32, "batch_size": 16, "epochs": 1.0}


@pytest.fixture(scope="package")
def store(tmp_path_factory):
    """An isolated MLflow store for the package, with the hub switched off."""
    with isolated_tracking(tmp_path_factory.mktemp("mlflow"), HF_HUB_OFFLINE="1") as uri:
        yield uri


@pytest.fixture(scope="package")
def trained(store):
    """The tiny `news_sentiment` model, trained and registered once for the package."""
    from sentiment.finetune import SentimentTrainSettings, train_sentiment

    return train_sentiment(SentimentTrainSettings(**TINY, experiment_name="sentiment_tests"))


@pytest.fixture(scope="package")
def analyzer(trained):
    from sentiment import SentimentAnalyzer

    return SentimentAnalyzer.from_registry("news_sentiment", trained.version)


@pytest.fixture(scope="package")
def forecaster_name(store):
    """A tiny registered LSTM price forecaster (a few seconds)."""
    from training.experiment import train_model
    from training.models.lstm import LSTMModelConfig
    from training.specs import DataSpec, TrainSettings

    name = "tiny_price_forecast"
    train_model(
        TrainSettings(
            data=DataSpec(days_back=60),
            config=LSTMModelConfig(epochs=1, sequence_length=32, hidden_units=16),
            model_name=name,
            experiment_name="sentiment_tests",
        )
    )
    return name
