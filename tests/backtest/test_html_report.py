"""The interactive HTML reports, built from a real small backtest and walk-forward on the bundled
candles, render their plots in headless Chromium with plotly.js from the page itself (no CDN),
and the walk-forward job writes and logs its report next to the PNG."""

from __future__ import annotations

import re

import mlflow
import pytest
from mlflow.models import Model

from backtest import BacktraderEngine, MLBacktraderStrategy
from backtest.html_report import backtest_report
from backtest.jobs import run_walk_forward_job
from backtest.settings import WalkForwardSettings
from backtest.strategies import forecast_table
from tests.browser import dump_dom
from training.data import load_data
from training.fit import fit_forecaster
from training.models.lstm import LSTMModelConfig
from training.specs import DataSpec

FREE = BacktraderEngine(commission=0.0, slippage=0.0)
TINY = LSTMModelConfig(sequence_length=16, epochs=1, hidden_units=8)


def legend_names(dom: str) -> set[str]:
    """Trace names as Plotly drew them in the legend."""
    return set(re.findall(r'class="legendtext"[^>]*>([^<]+)<', dom))


def assert_offline(page: str) -> None:
    """plotly.js is inline: no script is fetched from anywhere, least of all a CDN."""
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert "Plotly.newPlot" in page


@pytest.fixture(scope="module")
def walk_forward_job(tracking, tmp_path_factory):
    """Two windows, one after another in this process (no Ray): the CLI's job."""
    out = tmp_path_factory.mktemp("wf_reports")
    settings = WalkForwardSettings(
        data=DataSpec(days_back=16),
        model_config=TINY,
        train_days=10,
        test_days=3,
        step_days=3,
        engine=FREE,
        parallel=False,
        experiment_name="wf_report",
        output_dir=str(out),
    )
    return out, run_walk_forward_job(settings)


def test_backtest_report_renders_price_trades_band_equity_and_drawdown(tmp_path):
    bars = load_data("BTC/USDT", data_path="sample", days_back=20)
    train, test = bars.iloc[:240], bars.iloc[240:]
    fit = fit_forecaster({"BTC/USDT": train}, TINY, show_progress=False)
    table = forecast_table(fit.forecaster, bars)  # the test bars' windows reach into train
    result = FREE.run_backtest(test, MLBacktraderStrategy, {"forecast": table})
    assert result.trades, "a report without trades would not show the markers"
    page = backtest_report(result, test, table, title="Tiny LSTM")
    assert_offline(page)
    path = tmp_path / "backtest_report.html"
    path.write_text(page, encoding="utf-8")
    dom = dump_dom(path.as_uri())
    assert dom.count('class="plot-container') == 1 and dom.count('class="main-svg"') >= 2
    assert {
        "close",
        "entries",
        "exits",
        "forecast interval",
        "strategy",
        "buy and hold",
        "strategy drawdown",
    } <= legend_names(dom)
    for title in ("Price", "Portfolio value", "Drawdown %", "Tiny LSTM: return"):
        assert title in dom
    assert "<h2>Metrics</h2>" in dom and "Sharpe" in dom


def test_walk_forward_job_writes_logs_and_renders_its_report(walk_forward_job):
    out, job = walk_forward_job
    assert job.to_dict()["html_report"] == str(out / "walk_forward_report.html")
    assert (out / "walk_forward.png").exists()
    page = (out / "walk_forward_report.html").read_text(encoding="utf-8")
    assert_offline(page)
    run = mlflow.get_run(job.run_id)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(job.run_id)}
    assert {"walk_forward.png", "walk_forward.json", "walk_forward_report.html"} <= artifacts
    dom = dump_dom((out / "walk_forward_report.html").as_uri())
    assert dom.count('class="plot-container') == 1 and dom.count('class="main-svg"') >= 2
    assert {
        "in sample",
        "out of sample",
        "buy and hold",
        "return degradation (pp)",
        "Sharpe degradation",
    } <= legend_names(dom)
    assert "0: " + job.windows[0]["test_start"][:10] in dom  # a label per window
    assert "avg_sharpe_degradation" in dom
    # The parent run's name and filter tags, as the MLflow UI lists them.
    assert run.info.run_name == "walk_forward_lstm_BTCUSDT_1h"
    tags = run.data.tags
    assert (tags["symbol"], tags["interval"], tags["model_type"]) == ("BTC/USDT", "1h", "lstm")
    assert tags["data_start"] < tags["data_end"]


def test_walk_forward_window_models_carry_a_signature_and_an_input_example(walk_forward_job):
    _, job = walk_forward_job
    assert len(job.windows) == 2
    for window in job.windows:
        local = mlflow.artifacts.download_artifacts(window["model_uri"])
        model = Model.load(local)
        assert model.signature is not None and model.signature.outputs.input_names() == [
            "prediction",
            "predicted_return",
            "lower",
            "upper",
        ]
        assert model.load_input_example(local).shape == (2, 16, 5)
