"""Every model type trains, registers and round-trips through the MLflow registry; versions
resolve by number, `latest` and alias; promote, rollback and list work."""

from __future__ import annotations

import logging

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import Model

from training import deploy
from training.data import load_data
from training.dataset import make_splits
from training.experiment import train_model
from training.models import build_config
from training.registry import (
    ModelNotFoundError,
    list_models,
    load_forecaster,
    promote,
    resolve_version,
    rollback,
)
from training.specs import DataSpec, TrainSettings

TINY = {"epochs": 2, "sequence_length": 24}
CASES = {
    "lstm": (("BTC/USDT",), {"hidden_size": 8}),
    "cnn_lstm": (("BTC/USDT", "ETH/USDT"), {"hidden_size": 8, "conv_channels": 4}),
    "transformer": (("BTC/USDT",), {"d_model": 8, "nhead": 2, "dim_feedforward": 16}),
}


@pytest.fixture(scope="module")
def trained(tracking):
    out = {}
    for model_type, (symbols, extra) in CASES.items():
        settings = TrainSettings(
            data=DataSpec(symbols=symbols, days_back=45),
            config=build_config(model_type, {**TINY, **extra}, num_assets=len(symbols)),
            model_type=model_type,
            model_name=f"t_{model_type}",
            experiment_name="tests",
        )
        out[model_type] = (settings, train_model(settings))
    return out


@pytest.mark.parametrize("model_type", sorted(CASES))
def test_registered_model_round_trips(trained, model_type):
    settings, result = trained[model_type]
    assert result.version == "1"
    frames = {s: load_data(s, data_path="sample", days_back=45) for s in settings.data.symbols}
    test = make_splits(frames, 24)["test"]
    windows = test.windows if model_type == "cnn_lstm" else test.windows[:, :, 0, :]
    model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}/latest")
    pred = model.predict(windows)
    assert list(pred.columns) == ["prediction", "predicted_return", "lower", "upper"]
    assert len(pred) == len(windows)
    assert (pred["lower"] < pred["prediction"]).all() and (pred["prediction"] < pred["upper"]).all()
    # The registered bundle reproduces the run's logged test metrics exactly.
    metrics = mlflow.get_run(result.run_id).data.metrics
    actual = test.next_close / windows[:, -1, ..., 3].reshape(len(windows), -1)[:, 0] - 1
    rmse = float(np.sqrt(np.mean((pred["predicted_return"] - actual) ** 2)))
    assert rmse == pytest.approx(metrics["test_rmse"], rel=1e-6)
    covered = ((test.next_close >= pred["lower"]) & (test.next_close <= pred["upper"])).mean()
    assert covered == pytest.approx(metrics["test_interval_coverage"])
    # Nested lists work as well as arrays, and importance is named by feature.
    nested = model.predict(windows[:2].tolist())
    pd.testing.assert_frame_equal(nested, pred.iloc[:2])
    importance = model.unwrap_python_model().feature_importance(windows[:4])
    assert sum(importance.values()) == pytest.approx(1.0)
    forecaster, _ = load_forecaster(settings.model_name, "1")
    assert set(importance) == set(forecaster.pipeline.feature_names)


def test_run_logs_params_metrics_plots_and_data_provenance(trained):
    settings, result = trained["lstm"]
    run = mlflow.get_run(result.run_id)
    # the guide's field names (hidden_size is the legacy name of hidden_units)
    assert run.data.params["hidden_units"] == "8" and run.data.params["model_type"] == "lstm"
    for key in (
        "test_rmse",
        "test_rmse_random_walk",
        "test_rmse_last_return",
        "test_directional_accuracy",
        "test_interval_coverage",
        "train_loss",
        "val_loss",
    ):
        assert key in run.data.metrics
    assert len(run.data.tags["data_sha256"]) == 64 and run.data.tags["data_start"]
    client = mlflow.MlflowClient()
    names = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"loss_curves.png", "predictions.png", "coverage_by_month.json"} <= names
    assert "data_metadata.json" in names
    history = client.get_metric_history(result.run_id, "val_loss")
    assert len(history) >= 1


@pytest.mark.parametrize("model_type", sorted(CASES))
def test_run_page_name_tags_forecast_plot_and_model_signature(trained, model_type):
    """What the MLflow UI shows for a training run, read back from the store: a readable name,
    tags to filter by, the return-space plot with monthly coverage, and a model with a
    signature and an input example of real windows."""
    settings, result = trained[model_type]
    run = mlflow.get_run(result.run_id)
    assert run.info.run_name == f"{model_type}_BTCUSDT_1h"
    tags = run.data.tags
    assert (tags["symbol"], tags["interval"], tags["model_type"]) == ("BTC/USDT", "1h", model_type)
    assert tags["symbols"] == ",".join(settings.data.symbols)
    assert tags["data_start"] < tags["data_end"]
    found = mlflow.search_runs(
        experiment_names=["tests"],
        filter_string=f"tags.symbol = 'BTC/USDT' and tags.model_type = '{model_type}'",
    )
    assert result.run_id in set(found["run_id"]) and set(found["tags.model_type"]) == {model_type}
    metrics = run.data.metrics
    assert 0 <= metrics["test_coverage_min_month"] <= metrics["test_interval_coverage"] <= 1
    assert metrics["test_interval_coverage"] <= metrics["test_coverage_max_month"] <= 1
    table = mlflow.artifacts.load_dict(f"runs:/{result.run_id}/coverage_by_month.json")
    assert table["nominal"] == 0.9 and table["months"][-1]["month"] == tags["data_end"][:7]
    assert min(m["coverage"] for m in table["months"]) == metrics["test_coverage_min_month"]
    local = mlflow.artifacts.download_artifacts(result.model_uri)
    model = Model.load(local)
    assert model.signature.outputs.input_names() == [
        "prediction",
        "predicted_return",
        "lower",
        "upper",
    ]
    example = model.load_input_example(local)  # two real test windows, as the model takes them
    assets = len(settings.data.symbols)
    assert example.shape == ((2, 24, assets, 5) if assets > 1 else (2, 24, 5))


def test_versions_resolve_by_latest_number_and_alias(trained):
    settings, first = trained["lstm"]
    second = train_model(settings)
    name = settings.model_name
    assert str(resolve_version(name, "latest").version) == second.version == "2"
    assert str(resolve_version(name, 1).version) == "1"
    promote(first.model_uri, name, "production")
    assert str(resolve_version(name, "production").version) == "1"
    promote(second.model_uri, name, "production")
    assert str(resolve_version(name, "production").version) == "2"
    assert str(rollback(name, "production").version) == "1"
    assert str(resolve_version(name, "production").version) == "1"
    with pytest.raises(ModelNotFoundError, match="no earlier version"):
        rollback(name, "production")
    with pytest.raises(ModelNotFoundError, match=r"no version or alias '7'.*versions \[1, 2\]"):
        resolve_version(name, "7")
    with pytest.raises(ModelNotFoundError, match="no version or alias 'staging'"):
        resolve_version(name, "staging")
    with pytest.raises(ModelNotFoundError, match="no registered model 'nope'"):
        load_forecaster("nope")
    listed = {m["name"]: m for m in list_models()}
    versions = listed[name]["versions"]
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[0]["aliases"] == ["production"]
    assert "rmse" in versions[0]["test_metrics"]


def test_deploy_cli_promotes_unregistered_run_and_lists(trained, tracking, capsys):
    settings = TrainSettings(
        data=DataSpec(days_back=45),
        config=build_config("lstm", {**TINY, "hidden_size": 8}),
        model_name="t_cli",
        experiment_name="tests",
        register=False,
    )
    result = train_model(settings)
    deploy.main(
        [
            "--action",
            "promote",
            "--model-uri",
            result.model_uri,
            "--model-name",
            "t_cli",
            "--stage",
            "production",
        ]
    )
    assert "t_cli@production -> version 1" in capsys.readouterr().out
    deploy.main(["--action", "list", "--model-name", "t_cli"])
    assert '"production"' in capsys.readouterr().out
    # called as a function, the shim raises the library's error (as a program: one line, exit 2)
    with pytest.raises(ModelNotFoundError, match="no earlier version"):
        deploy.main(["--action", "rollback", "--model-name", "t_cli"])


def test_run_is_named_and_tagged_and_model_has_a_signature(trained):
    settings, result = trained["cnn_lstm"]
    run = mlflow.get_run(result.run_id)
    assert run.info.run_name == "cnn_lstm_BTCUSDT_1h"
    tags = run.data.tags
    assert tags["symbol"] == "BTC/USDT" and tags["symbols"] == "BTC/USDT,ETH/USDT"
    assert tags["interval"] == "1h" and tags["model_type"] == "cnn_lstm"
    info = mlflow.models.get_model_info(result.model_uri)
    assert info.signature is not None and info.signature.outputs.input_names() == [
        "prediction",
        "predicted_return",
        "lower",
        "upper",
    ]
    assert info.saved_input_example_info is not None


@pytest.mark.parametrize("name", ["it's", 'say "hi"', "back\\slash", "pct%_"])
def test_names_with_quotes_are_searched_not_parsed(trained, name):
    with pytest.raises(ModelNotFoundError, match="no registered model"):
        resolve_version(name)


@pytest.mark.parametrize("name", ["a/b", "a:b", "", "both'\"", 7])
def test_names_mlflow_refuses_are_value_errors(trained, name):
    with pytest.raises(ValueError, match="model name"):
        resolve_version(name)


@pytest.mark.parametrize("version", ["\u00b2", "\u0663", "1.0", "-1", "0", " "])
def test_versions_are_ascii_digits_only(trained, version):
    with pytest.raises(ModelNotFoundError, match="no version or alias"):
        resolve_version(trained["lstm"][0].model_name, version)


def test_logging_a_model_says_nothing_of_checking_its_input_example(tracking, capfd):
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logger = logging.getLogger("mlflow.pyfunc")  # MLflow's loggers do not reach caplog's
    logger.addHandler(handler)
    try:
        settings = TrainSettings(
            data=DataSpec(symbols=("BTC/USDT",), days_back=45),
            config=build_config("lstm", {**TINY, "epochs": 1, "hidden_size": 4}),
            model_type="lstm",
            model_name="t_quiet",
            experiment_name="tests",
        )
        assert train_model(settings).version == "1"
    finally:
        logger.removeHandler(handler)
    assert not [r.getMessage() for r in records if "input example" in r.getMessage()]
    err = capfd.readouterr().err  # nor bars for copying local artifacts
    assert "Downloading artifacts" not in err, err[-500:]
