"""The tracking module: experiment selection under `mlflow run` (MLFLOW_RUN_ID), param logging
once with `resolved.` tags, train-if-missing, and run names; the monthly interval coverage and
the return-space forecast plot (a training run's page is read back in test_registry)."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from training.evaluation import coverage_by_month, forecast_metrics, plot_forecast
from training.tracking import ensure_registered, log_params, run_name_of, start_run


def test_start_run_outside_mlflow_run_selects_the_experiment(tracking):
    with start_run("tracking_a", run_name="a_run", tags={"symbol": "BTC/USDT"}) as run:
        pass
    got = mlflow.get_run(run.info.run_id)
    assert mlflow.get_experiment(got.info.experiment_id).name == "tracking_a"
    assert got.info.run_name == "a_run" and got.data.tags["symbol"] == "BTC/USDT"


@pytest.mark.parametrize("selected", [None, "tracking_other"])
def test_under_mlflow_run_the_launchers_run_and_experiment_win(tracking, monkeypatch, selected):
    client = MlflowClient()
    launcher_experiment = client.create_experiment(f"launcher_{selected}")
    launched = client.create_run(launcher_experiment).info.run_id
    client.log_param(launched, "epochs", "100.0")  # what `mlflow run` logs: the raw -P value
    if selected:  # an experiment selected earlier in the process must not get in the way
        mlflow.set_experiment(selected)
    monkeypatch.setenv("MLFLOW_RUN_ID", launched)
    with start_run("lstm_forecasting", run_name="lstm_BTCUSDT_1h") as run:
        log_params({"epochs": 100, "symbol": "BTC/USDT"})
        log_params({"symbol": "BTC/USDT"})  # once: logging it again is no error
    assert run.info.run_id == launched
    got = mlflow.get_run(launched)
    assert got.info.experiment_id == launcher_experiment
    assert got.info.run_name == "lstm_BTCUSDT_1h"
    assert got.data.params == {"epochs": "100.0", "symbol": "BTC/USDT"}
    assert got.data.tags["resolved.epochs"] == "100"
    assert mlflow.get_experiment_by_name("lstm_forecasting") is None


def test_nested_runs_go_under_the_active_run(tracking):
    with start_run("tracking_nested") as parent, start_run(run_name="child", nested=True) as child:
        pass
    tags = mlflow.get_run(child.info.run_id).data.tags
    assert tags["mlflow.parentRunId"] == parent.info.run_id


def test_log_params_needs_a_run(tracking):
    with pytest.raises(RuntimeError, match="active run"):
        log_params({"a": 1})


def test_ensure_registered_trains_only_when_missing(tracking, tmp_path):
    calls = []

    def train():
        calls.append(1)
        client = MlflowClient()
        client.create_registered_model("ensured")
        client.create_model_version("ensured", tmp_path.as_uri())

    assert ensure_registered("ensured", train, "a stub") == "1"
    assert ensure_registered("ensured", train) == "1"
    assert calls == [1]


def test_run_names_are_readable():
    assert run_name_of("lstm", "BTC/USDT", "1h") == "lstm_BTCUSDT_1h"
    assert run_name_of("cnn_lstm", None, "", "4h") == "cnn_lstm_4h"


def test_coverage_per_month_and_the_return_space_plot():
    times = pd.date_range("2025-01-31 20:00", periods=8, freq="h", tz="UTC")  # 4 bars a month
    last = np.full(8, 100.0)
    forecast = {
        "last_close": last,
        "predicted_return": np.full(8, 0.001),
        "lower": last - 1.0,
        "upper": last + 1.0,
    }
    next_close = np.array([100.5, 99.5, 102.0, 100.0, 100.2, 98.0, 97.0, 96.0])
    monthly = coverage_by_month(times, next_close, forecast)
    assert monthly.to_dict(orient="list") == {
        "month": ["2025-01", "2025-02"],
        "bars": [4, 4],
        "coverage": [0.75, 0.25],
    }
    metrics = forecast_metrics(forecast, next_close, np.zeros(8), times)
    assert metrics["coverage_min_month"] == 0.25 and metrics["coverage_max_month"] == 0.75
    assert metrics["interval_coverage"] == 0.5
    figure = plot_forecast(times, next_close, forecast, 0.9, monthly)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[0] == "Test split: next-bar return" and "coverage per month" in titles[2]
    assert figure.axes[0].get_ylabel() == "return %"  # returns, not price levels
