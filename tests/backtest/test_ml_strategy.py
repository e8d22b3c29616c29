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
from backtest.strategies import precompute_forecasts
from training.bundle import Forecaster
from training.data import load_data
from training.registry import ModelNotFoundError, load_forecaster
from training.train import TrainSettings, train_model

MODEL = "bt_tiny_lstm"
FREE = BacktraderEngine(commission=0.0, slippage=0.0)


@pytest.fixture(scope="module")
def registered(tracking):
    settings = TrainSettings(
        model_name=MODEL,
        days_back=30,
        experiment_name="backtest_tests",
        overrides={"epochs": 1, "sequence_length": 24, "hidden_size": 8},
    )
    return train_model(settings)


@pytest.fixture(scope="module")
def bars():
    return load_data("BTC/USDT", data_path="sample", days_back=20)


@pytest.fixture(scope="module")
def forecaster(registered):
    return load_forecaster(MODEL, "latest")[0]


def test_registered_model_backtest_forecasts_once_and_trades(registered, bars, monkeypatch):
    calls = []
    original = Forecaster.forecast

    def counting(self, windows, *args, **kwargs):
        calls.append(len(windows))
        return original(self, windows, *args, **kwargs)

    monkeypatch.setattr(Forecaster, "forecast", counting)
    result = FREE.run_backtest(
        bars, MLBacktraderStrategy, {"model_name": MODEL, "model_version": registered["version"]}
    )
    assert calls == [len(bars) - 24 + 1]  # one batched call: a window for every bar from 23 on
    assert result.metrics["num_trades"] >= 2
    assert set(result.benchmark) == set(result.metrics)
    assert len(result.equity_curve) == len(bars)
    # Nothing can be decided before the first full window (bar 23), so no fill before bar 24.
    assert min(f["bar"] for f in result.fills) >= 24


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
    run = mlflow.get_run(out["run_id"])
    assert run.data.metrics["sharpe_ratio"] == pytest.approx(out["sharpe_ratio"])
    assert "benchmark_total_return_pct" in run.data.metrics
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(out["run_id"])}
    assert {"equity_curve.png", "trades.json"} <= artifacts
    with pytest.raises(ModelNotFoundError):
        cli.main(["backtest", "--model-name", "missing_model", "--days-back", "10"])


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
