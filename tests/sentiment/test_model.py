"""The sentiment model: the real training path on a small subset, loading from the registry and
from a directory, the analyze contract, and clear errors."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from sentiment import NewsInputError, SentimentAnalyzer, SentimentModelError
from sentiment.finetune import SentimentTrainSettings, load_headlines, split_headlines
from sentiment.news import MAX_TEXT_CHARS
from sentiment.train import main
from training.tracking import ensure_registered

TEXTS = [
    "Bitcoin ETF approved by the SEC",
    "Company misses earnings, shares plunge",
    "Fed holds rates steady https://t.co/abc",
]


def test_training_logs_metrics_and_registers(trained):
    assert trained.version == "1"
    run = mlflow.get_run(trained.run_id)
    metrics = run.data.metrics
    for key in (
        "test_accuracy",
        "test_macro_f1",
        "test_f1_negative",
        "train_loss",
        "train_seconds",
    ):
        assert key in metrics, key
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_n"] == 32
    assert run.data.params["n_train"] == "128" and run.data.params["max_length"] == "32"


def test_split_is_stratified_and_disjoint():
    frame = load_headlines(SentimentTrainSettings().data_path)
    train, test = split_headlines(frame, 0.15, seed=42)
    assert len(train) + len(test) == len(frame) and not set(train.index) & set(test.index)
    share = test["label"].value_counts(normalize=True).sort_index()
    assert np.allclose(share, frame["label"].value_counts(normalize=True).sort_index(), atol=0.01)
    again, _ = split_headlines(frame, 0.15, seed=42)
    assert train.index.equals(again.index)


def test_analyze_contract(analyzer):
    out = analyzer.analyze(TEXTS)
    assert len(out) == 3
    for row in out:
        probs = row["probabilities"]
        assert row["label"] in ("negative", "positive", "neutral")
        assert row["label"] == max(probs, key=probs.get)
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert row["score"] == pytest.approx(probs["positive"] - probs["negative"])
        assert -1.0 <= row["score"] <= 1.0 and row["confidence"] == max(probs.values())
    assert analyzer.analyze([]) == []
    assert analyzer.source == "models:/news_sentiment/1"


def test_batches_do_not_change_scores(analyzer):
    one_by_one = np.vstack([analyzer.probabilities([t]) for t in TEXTS])
    assert np.allclose(analyzer.probabilities(TEXTS), one_by_one, atol=1e-5)


def test_directory_round_trip(analyzer, tmp_path, capfd):
    path = analyzer.save(tmp_path / "model")
    assert (path / "model.safetensors").is_file() and (path / "head.safetensors").is_file()
    again = SentimentAnalyzer.from_directory(path)
    assert again.max_length == 32
    assert np.allclose(again.probabilities(TEXTS), analyzer.probabilities(TEXTS), atol=1e-6)
    # no per-file bars from transformers for a local directory
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err, err[-500:]


def test_registered_pyfunc_predicts_like_the_analyzer(trained, analyzer):
    frame = mlflow.pyfunc.load_model("models:/news_sentiment/1").predict(TEXTS)
    assert list(frame.columns) == [
        "label",
        "score",
        "confidence",
        "p_negative",
        "p_positive",
        "p_neutral",
    ]
    want = analyzer.analyze(TEXTS)
    assert frame["label"].tolist() == [r["label"] for r in want]
    assert np.allclose(frame["score"], [r["score"] for r in want], atol=1e-6)


def test_default_and_registry_versions(trained, analyzer):
    default = SentimentAnalyzer.from_default()
    assert default.source == "models:/news_sentiment/1"

    def must_not_train():
        raise AssertionError("news_sentiment is registered: nothing must be trained")

    assert ensure_registered("news_sentiment", must_not_train) == "1"  # present: nothing trained
    with pytest.raises(LookupError, match="no version or alias '7'"):
        SentimentAnalyzer.from_registry("news_sentiment", 7)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([""], r"texts\[0\]: empty"),
        (["ok", "x" * (MAX_TEXT_CHARS + 1)], r"texts\[1\]"),
        ([None], r"texts\[0\]: a headline must be a string"),
    ],
)
def test_bad_texts_are_named(analyzer, texts, message):
    with pytest.raises(NewsInputError, match=message):
        analyzer.analyze(texts)


def test_missing_default_model_says_how_to_train(store, tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(SentimentModelError, match="python -m sentiment.train"):
            SentimentAnalyzer.from_default()
    finally:
        mlflow.set_tracking_uri(store)


def test_directory_without_model_and_offline_hub_are_clear(tmp_path, monkeypatch):
    with pytest.raises(SentimentModelError, match="no config.json"):
        SentimentAnalyzer.from_directory(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network here: only the local hub cache
    with pytest.raises(SentimentModelError, match="ProsusAI/finbert"):
        SentimentAnalyzer.from_hub("ProsusAI/finbert")


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "python -m sentiment.train" in out and "--max-length" in out


def test_score_command_prints_json(trained):
    import json

    from typer.testing import CliRunner

    from mltrade.cli import app

    result = CliRunner().invoke(app, ["sentiment", "score", *TEXTS, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["text"] for r in rows] == TEXTS
    assert all(r["label"] in ("negative", "positive", "neutral") for r in rows)
    empty = CliRunner().invoke(app, ["sentiment", "score", ""])
    # the last line (a progress bar of the model load may precede it)
    assert empty.exit_code == 2 and empty.stderr.splitlines()[-1].startswith("error: texts[0]")


def test_the_light_copies_of_the_default_name_agree():
    """The CLI and the launcher spell the default name out so that importing them does not load
    torch and transformers; they must not drift from the model's own default."""
    from deployments.launcher import SENTIMENT_MODEL_NAME
    from mltrade.sentiment import DEFAULT_NAME
    from sentiment.model import DEFAULT_MODEL_NAME

    assert SENTIMENT_MODEL_NAME == DEFAULT_NAME == DEFAULT_MODEL_NAME
