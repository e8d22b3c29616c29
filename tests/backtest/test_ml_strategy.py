"""MLBacktraderStrategy end to end on a tiny registered model: one batched forecast, no
look-ahead, the fee-aware entry and the confidence gate, clear errors, and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from backtest import (
    BacktraderEngine,
    MLBacktraderStrategy,
    NotEnoughBarsError,
    StrategyParamError,
)
from backtest import run as cli
from backtest.strategies import forecast_table, precompute_forecasts
from training.bundle import Forecaster
from training.data import load_data
from training.experiment import train_model
from training.models.lstm import LSTMModelConfig
from training.registry import ModelNotFoundError
from training.specs import DataSpec, TrainSettings
from training.tracking import load_model

MODEL = "bt_tiny_lstm"
FREE = BacktraderEngine(commission=0.0, slippage=0.0)


@pytest.fixture(scope="module")
def registered(tracking):
    settings = TrainSettings(
        data=DataSpec(days_back=30),
        config=LSTMModelConfig(epochs=1, sequence_length=24, hidden_units=8),
        model_name=MODEL,
        experiment_name="backtest_tests",
    )
    return train_model(settings)


@pytest.fixture(scope="module")
def bars():
    return load_data("BTC/USDT", data_path="sample", days_back=20)


@pytest.fixture(scope="module")
def forecaster(registered):
    return load_model(MODEL, "latest")[0]


def test_registered_model_backtest_forecasts_once_and_trades(registered, bars, monkeypatch):
    calls = []
    original = Forecaster.forecast

    def counting(self, windows, *args, **kwargs):
        calls.append(len(windows))
        return original(self, windows, *args, **kwargs)

    monkeypatch.setattr(Forecaster, "forecast", counting)
    result = FREE.run_backtest(
        bars, MLBacktraderStrategy, {"model_name": MODEL, "model_version": registered.version}
    )
    assert calls == [len(bars) - 24 + 1]  # one batched call: a window for every bar from 23 on
    assert result.metrics["num_trades"] >= 2
    assert set(result.benchmark) == set(result.metrics)
    assert len(result.equity_curve) == len(bars)
    # Nothing can be decided before the first full window (bar 23), so no fill before bar 24.
    assert min(f["bar"] for f in result.fills) >= 24


def test_the_guides_call_and_result_keys(registered, bars):
    engine = BacktraderEngine(initial_cash=10000, commission=0.001)
    results = engine.run_backtest(
        data=bars,
        strategy=MLBacktraderStrategy,
        strategy_params={"model_name": MODEL, "model_version": "latest"},
    )
    assert f"{results['total_return_pct']:.2f}" and f"{results['metrics']['sharpe_ratio']:.2f}"
    assert "benchmark" in results and results.get("trades") == results.trades


def test_a_precomputed_forecast_table_trades_like_the_model(forecaster, bars):
    table = forecast_table(forecaster, bars)
    via_model = FREE.run_backtest(bars, MLBacktraderStrategy, {"forecaster": forecaster})
    via_table = FREE.run_backtest(bars, MLBacktraderStrategy, {"forecast": table})
    assert via_table.fills == via_model.fills and via_table.fills
    # A later stretch reads its rows by time: its first bars have forecasts at once.
    later = FREE.run_backtest(bars.iloc[200:], MLBacktraderStrategy, {"forecast": table})
    first_up = np.flatnonzero(table["predicted_return"].to_numpy()[200:] > 0)[0]
    assert later.fills[0]["bar"] == first_up + 1
    with pytest.raises(ValueError, match="forecast has no row for 5 of the"):
        FREE.run_backtest(bars, MLBacktraderStrategy, {"forecast": table.iloc[5:]})


def test_decisions_never_use_later_candles(forecaster, bars):
    full = precompute_forecasts(forecaster, bars)
    for k in (60, 200):
        cut = precompute_forecasts(forecaster, bars.iloc[:k])
        # float32 kernels may differ in the last bits with the batch size, nothing more
        np.testing.assert_allclose(cut["predicted_return"], full["predicted_return"][:k], rtol=1e-5)
        np.testing.assert_allclose(cut["confidence"], full["confidence"][:k], rtol=1e-5)
    whole = FREE.run_backtest(bars, MLBacktraderStrategy, {"forecaster": forecaster})
    k = 300
    part = FREE.run_backtest(bars.iloc[:k], MLBacktraderStrategy, {"forecaster": forecaster})
    assert part.fills == [f for f in whole.fills if f["bar"] < k]
    np.testing.assert_allclose(part.equity_curve["equity"], whole.equity_curve["equity"][:k])


def test_entries_clear_the_fee_hurdle_and_the_confidence_gate(forecaster, bars):
    forecast = precompute_forecasts(forecaster, bars)
    pred, conf = forecast["predicted_return"], forecast["confidence"]
    # Fees set so the round-trip hurdle sits at the median positive forecast.
    hurdle = float(np.median(pred[pred > 0]))
    engine = BacktraderEngine(commission=hurdle / 2, slippage=0.0)
    candidates = np.flatnonzero(pred > hurdle)
    assert len(candidates) >= 4
    gate = float(np.median(conf[candidates]))
    result = engine.run_backtest(
        bars, MLBacktraderStrategy, {"forecaster": forecaster, "min_confidence": gate}
    )
    assert result.trades, "the gate should let the more confident half through"
    for trade in result.trades:
        decided = bars.index.get_loc(trade["entry_time"]) - 1
        assert pred[decided] > hurdle and conf[decided] >= gate
    ungated = engine.run_backtest(bars, MLBacktraderStrategy, {"forecaster": forecaster})
    assert ungated.metrics["num_trades"] > result.metrics["num_trades"]


def test_history_gives_the_first_bars_full_windows(forecaster, bars):
    history, test = bars.iloc[:200], bars.iloc[200:260]
    with_history = precompute_forecasts(forecaster, test, history)
    assert not np.isnan(with_history["predicted_return"]).any()
    full = precompute_forecasts(forecaster, bars)
    np.testing.assert_allclose(with_history["predicted_return"], full["predicted_return"][200:260])
    with pytest.raises(ValueError, match="history must end before"):
        precompute_forecasts(forecaster, test, bars.iloc[:210])


def test_bad_input_errors(registered, forecaster, bars):
    with pytest.raises(ModelNotFoundError, match="no registered model 'nope'"):
        FREE.run_backtest(bars, MLBacktraderStrategy, {"model_name": "nope"})
    with pytest.raises(ModelNotFoundError, match="no version or alias '9'"):
        FREE.run_backtest(bars, MLBacktraderStrategy, {"model_name": MODEL, "model_version": 9})
    with pytest.raises(NotEnoughBarsError, match="sequence_length 24: need at least 25 bars"):
        FREE.run_backtest(bars.iloc[:20], MLBacktraderStrategy, {"forecaster": forecaster})
    with pytest.raises(StrategyParamError, match="'position_size' must be float or int, got str"):
        FREE.run_backtest(bars, MLBacktraderStrategy, {"position_size": "all"})
    with pytest.raises(StrategyParamError, match="'forecaster' must be Forecaster or None"):
        FREE.run_backtest(bars, MLBacktraderStrategy, {"forecaster": "lstm"})
    with pytest.raises(ValueError, match=r"min_confidence must be in \[0, 1\]"):
        FREE.run_backtest(
            bars, MLBacktraderStrategy, {"forecaster": forecaster, "min_confidence": 2.0}
        )


def test_cli_backtest_logs_run_and_writes_equity_png(registered, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    assert "walk-forward" in capsys.readouterr().out
    out = cli.main(
        [
            "backtest",
            "--model-name",
            MODEL,
            "--days-back",
            "10",
            "--commission",
            "0",
            "--slippage",
            "0",
            "--output-dir",
            str(tmp_path),
            "--experiment-name",
            "backtest_tests",
        ]
    )
    assert (tmp_path / "equity_curve.png").stat().st_size > 10_000
    assert out["html_report"] == str(tmp_path / "backtest_report.html")  # printed beside the PNG
    assert "forecast interval" in (tmp_path / "backtest_report.html").read_text(encoding="utf-8")
    run = mlflow.get_run(out["run_id"])
    assert run.data.metrics["sharpe_ratio"] == pytest.approx(out["sharpe_ratio"])
    assert "benchmark_total_return_pct" in run.data.metrics
    assert run.info.run_name == f"backtest_{MODEL}_v1_BTCUSDT"
    assert (run.data.tags["symbol"], run.data.tags["model_name"]) == ("BTC/USDT", MODEL)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(out["run_id"])}
    assert {"equity_curve.png", "trades.json", "backtest_report.html"} <= artifacts
    with pytest.raises(ModelNotFoundError):
        cli.main(["backtest", "--model-name", "missing_model", "--days-back", "10"])


def test_backtest_job_takes_typed_settings_and_returns_a_typed_result(registered):
    from backtest.jobs import run_backtest_job
    from backtest.settings import BacktestSettings, StrategySettings

    settings = BacktestSettings(
        data=DataSpec(days_back=10),
        model_name=MODEL,
        engine=FREE,
        strategy=StrategySettings(min_confidence=0.5),
        experiment_name="backtest_tests",
        output_dir=None,
    )
    result = run_backtest_job(settings)
    assert result.model_version == 1 and result.report_path is None
    params = mlflow.get_run(result.run_id).data.params
    assert params["strategy_min_confidence"] == "0.5" and params["strategy_model_version"] == "1"
    assert params["engine_interval"] == "1h"  # the engine annualises at the data's interval
    assert result.to_dict()["sharpe_ratio"] == result.metrics["sharpe_ratio"]


@pytest.mark.slow
def test_mlproject_backtest_entry(registered, tracking, tmp_path):
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking)
    env.pop("MLFLOW_EXPERIMENT_ID", None)  # exported by set_experiment; clashes with the name
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    cmd = [str(Path(sys.executable).parent / "mlflow"), "run", ".", "-e", "backtest"]
    cmd += ["--env-manager", "local", "--experiment-name", "mlproject_backtest"]
    params = {"model_name": MODEL, "days_back": 10, "commission": 0, "output_dir": tmp_path}
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "equity_curve.png").exists()
    runs = mlflow.search_runs(experiment_names=["mlproject_backtest"])
    assert len(runs) == 1 and "metrics.sharpe_ratio" in runs
    # The entry's own parameter and the version it resolved to, side by side in one run.
    assert runs.iloc[0]["params.model_version"] == "latest"
    assert runs.iloc[0]["params.strategy_model_version"] == "1"
