"""Walk-forward: windows never overlap train and test, bad settings fail early with the numbers
needed, tiny windows run as Ray tasks with one parent MLflow run and nested runs, and Ray gives
exactly what the windows give in process (same windows, metrics, trades and fills)."""

from __future__ import annotations

import io
from dataclasses import replace

import mlflow
import numpy as np
import pandas as pd
import pytest
import ray

from backtest import BacktraderEngine, MLBacktraderStrategy, WalkForwardAnalyzer, WalkForwardError
from backtest.walk_forward import as_model_config, summarize
from backtest.window_tasks import InProcessWindows, RayWindows
from backtest.windows import make_windows
from training.data import load_data
from training.models.lstm import LSTMModelConfig
from training.models.transformer import TransformerConfig

from .test_engine import SmaCross

TINY = {"model_type": "lstm", "epochs": 1, "sequence_length": 16, "hidden_size": 8}


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def bars():
    return load_data("BTC/USDT", data_path="sample", days_back=40)


@pytest.mark.parametrize(
    ("train", "test", "step"), [(10, 3, 3), (7, 2, 1), (5, 5, 10), (12.5, 1.5, 2)]
)
def test_windows_never_overlap_train_and_test(bars, train, test, step):
    windows = make_windows(bars.index, train, test, step)
    assert len(windows) >= 2
    for w in windows:
        train_bars, test_bars = w.slices(bars)
        assert len(train_bars) and len(test_bars)
        assert train_bars.index.max() < test_bars.index.min()
        assert train_bars.index.intersection(test_bars.index).empty
        assert w.test_start == w.train_end == w.train_start + pd.Timedelta(days=train)
        assert w.test_end <= bars.index[-1] + pd.Timedelta(hours=1)
    starts = [w.train_start for w in windows]
    assert all(b - a == pd.Timedelta(days=step) for a, b in zip(starts, starts[1:], strict=False))


def test_too_little_data_or_training_bars_says_what_is_needed(bars):
    analyzer = WalkForwardAnalyzer(train_period_days=180, test_period_days=30, step_days=30)
    with pytest.raises(
        WalkForwardError, match=r"spans 40\.0 days .* needs 180 training \+ 30 test"
    ):
        analyzer.plan(bars, TINY)
    short_train = WalkForwardAnalyzer(train_period_days=3, test_period_days=2, step_days=2)
    with pytest.raises(WalkForwardError, match=r"needs at least 201 training bars \(9 days"):
        short_train.plan(bars, TINY)
    with pytest.raises(ValueError, match="unknown LSTMModelConfig keys"):
        short_train.plan(bars, {**TINY, "hiden_size": 8})
    with pytest.raises(WalkForwardError, match="SmaCross takes no `forecaster` parameter"):
        short_train.analyze(bars, SmaCross, TINY)


def _comparable(rows: list[dict]) -> list[dict]:
    skip = ("run_id", "model_uri", "seconds")
    return [{k: v for k, v in row.items() if k not in skip} for row in rows]


def test_ray_windows_trade_exactly_as_in_process(ray_cluster, bars):
    """Three windows (one more than the CPUs: a backtest runs beside the last model's training)
    with trades both ways: Ray tasks and this process agree to the last fill."""
    analyzer = WalkForwardAnalyzer(
        train_period_days=10,
        test_period_days=3,
        step_days=3,
        engine=BacktraderEngine(commission=0.0, slippage=0.0, allow_short=True),
    )
    candles, windows, config = analyzer.plan(bars.iloc[: 19 * 24], TINY)
    args = (config, MLBacktraderStrategy, {"position_size": 0.5}, analyzer.engine, "BTC/USDT")
    on_ray = sorted(RayWindows(candles, windows, args, 1, 1.0, 0.0), key=lambda o: o.window.index)
    in_process = list(InProcessWindows(candles, windows, args, 1))
    assert [o.window for o in on_ray] == windows == [o.window for o in in_process]
    assert sum(o.test.metrics["num_trades"] for o in on_ray) > 0
    for ray_out, local in zip(on_ray, in_process, strict=True):
        assert ray_out.model_metrics == local.model_metrics
        assert ray_out.node_id is not None and local.node_id is None
        for side in ("train", "test"):
            a, b = getattr(ray_out, side), getattr(local, side)
            assert a.trades == b.trades and a.fills == b.fills and a.metrics == b.metrics
            pd.testing.assert_frame_equal(a.equity_curve, b.equity_curve, check_exact=True)


def test_two_windows_on_ray_with_nested_mlflow_runs(ray_cluster, tracking, bars, tmp_path):
    analyzer = WalkForwardAnalyzer(
        train_period_days=10,
        test_period_days=3,
        step_days=3,
        engine=BacktraderEngine(commission=0.0, slippage=0.0),
        experiment_name="wf_tests",
        show_progress=False,
        output_dir=str(tmp_path),
    )
    data = bars.iloc[: 16 * 24]  # 16 days: exactly two windows
    result = analyzer.analyze(data, MLBacktraderStrategy, TINY, {"position_size": 0.5}, "BTC/USDT")
    assert [w["index"] for w in result.windows] == [0, 1]
    client = mlflow.MlflowClient()
    for row in result.windows:
        assert row["train_end"] == row["test_start"] and row["train_bars"] == 240
        assert row["test_bars"] == 72
        child = client.get_run(row["run_id"])
        assert child.data.tags["mlflow.parentRunId"] == result.run_id
        assert child.data.metrics["test_sharpe_ratio"] == pytest.approx(row["test"]["sharpe_ratio"])
        assert "model_test_rmse" in child.data.metrics
        # The logged model reproduces the window's out-of-sample backtest exactly.
        model = mlflow.pyfunc.load_model(row["model_uri"]).unwrap_python_model().forecaster
        assert model.metadata["data_end"] < row["test_start"]  # trained on the past only
        train = data[(data.index >= row["train_start"]) & (data.index < row["train_end"])]
        test = data[(data.index >= row["test_start"]) & (data.index < row["test_end"])]
        again = analyzer.engine.run_backtest(
            test,
            MLBacktraderStrategy,
            {"forecaster": model, "history": train, "position_size": 0.5},
        )
        np.testing.assert_allclose(
            again.metrics["total_return_pct"], row["test"]["total_return_pct"]
        )
    assert result.summary == summarize(result.windows)
    train, test = result.summary["train"], result.summary["test"]
    assert train["avg_sharpe"] == pytest.approx(
        np.mean([w["train"]["sharpe_ratio"] for w in result.windows])
    )
    assert result.summary["degradation"]["avg_sharpe_degradation"] == pytest.approx(
        train["avg_sharpe"] - test["avg_sharpe"]
    )
    node = ray.get_runtime_context().get_node_id()
    assert {client.get_run(r["run_id"]).data.tags["ray_node_id"] for r in result.windows} == {node}
    # the same analysis in this process gives the same rows (runs and timings aside)
    in_process = replace(analyzer, parallel=False).analyze(
        data, MLBacktraderStrategy, TINY, {"position_size": 0.5}, "BTC/USDT"
    )
    assert _comparable(in_process.windows) == _comparable(result.windows)
    assert in_process.summary == result.summary
    parent = client.get_run(result.run_id)
    assert parent.data.metrics["degradation_avg_sharpe_degradation"] == pytest.approx(
        result.summary["degradation"]["avg_sharpe_degradation"]
    )
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"walk_forward.png", "walk_forward.json"} <= artifacts
    assert (tmp_path / "walk_forward.png").stat().st_size > 10_000


def test_model_config_may_be_typed_a_mapping_or_none(bars):
    typed = LSTMModelConfig(sequence_length=16, epochs=1, hidden_units=8)
    assert as_model_config(TINY) == typed  # the mapping form, legacy names included
    assert as_model_config(None) == LSTMModelConfig()
    assert as_model_config(TransformerConfig(sequence_length=24)).sequence_length == 24
    with pytest.raises(TypeError, match="model_config must be a model config"):
        as_model_config(["lstm"])
    analyzer = WalkForwardAnalyzer(train_period_days=10, test_period_days=3, step_days=3)
    candles, windows, config = analyzer.plan(bars, typed)
    assert config is typed and len(windows) == 10 and candles.index.equals(bars.index)
    with pytest.raises(WalkForwardError, match="cnn_lstm needs several symbols"):
        analyzer.plan(bars, {"model_type": "cnn_lstm"})


def test_typed_config_in_process_validates_candles_once(tracking, bars, monkeypatch):
    """The guide's call with a typed config: one window, sequential, results read as mappings."""
    import backtest.engine
    import backtest.strategies
    import backtest.walk_forward

    checked = []
    for module in (backtest.engine, backtest.strategies, backtest.walk_forward):
        original = module.validate_ohlcv

        def counting(df, source="data", original=original):
            checked.append(source)
            return original(df, source)

        monkeypatch.setattr(module, "validate_ohlcv", counting)
    analyzer = WalkForwardAnalyzer(
        train_period_days=10,
        test_period_days=3,
        step_days=3,
        parallel=False,
        experiment_name="wf_typed",
        show_progress=False,
    )
    results = analyzer.analyze(
        data=bars.iloc[: 13 * 24],
        strategy=MLBacktraderStrategy,
        model_config=LSTMModelConfig(sequence_length=16, epochs=1, hidden_units=8),
    )
    assert checked == ["walk-forward data"]
    assert len(results["windows"]) == 1 and "summary" in results and "benchmark" not in results
    assert isinstance(results["summary"]["test"]["avg_return"], float)
    assert "avg_return_degradation" in results.get("summary")["degradation"]
    params = mlflow.get_run(results["run_id"]).data.params
    assert params["wf_model_type"] == "lstm" and params["wf_model_hidden_units"] == "8"


@pytest.mark.slow
def test_mlproject_walk_forward_entry_runs_the_cli(ray_cluster, tracking, tmp_path, capsys):
    """The entry's command, as `mlflow run` computes it, run in-process on the shared Ray."""
    import shlex
    from pathlib import Path

    from mlflow.projects._project_spec import load_project

    from backtest import run as cli

    project = load_project(Path(__file__).resolve().parents[2])
    params = {
        "days_back": 16,
        "train_days": 10,
        "test_days": 3,
        "step_days": 3,
        "sequence_length": 16,
        "epochs": 1,
        "output_dir": str(tmp_path),
    }
    command = project.get_entry_point("walk_forward").compute_command(params, None)
    argv = shlex.split(command)
    assert argv[:4] == ["python", "-m", "backtest.run", "walk-forward"]
    out = cli.main([*argv[3:], "--experiment-name", "mlproject_walk_forward"])
    assert (tmp_path / "walk_forward.png").exists()
    runs = mlflow.search_runs(experiment_names=["mlproject_walk_forward"])
    children = runs[runs["tags.mlflow.parentRunId"] == out["run_id"]]
    assert len(runs) == 3 and len(children) == 2
    assert set(out) >= {"train", "test", "degradation"}
    assert '"avg_sharpe_degradation"' in capsys.readouterr().out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_shows_each_window_with_its_test_return(monkeypatch):
    row = {
        "index": 3,
        "test_start": "2024-02-01 00:00:00+00:00",
        "test_end": "2024-03-02 00:00:00+00:00",
        "test": {"total_return_pct": 1.234},
        "test_benchmark": {"total_return_pct": -2.5},
        "seconds": 7.25,
    }
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    with WalkForwardAnalyzer()._progress(10) as progress:
        WalkForwardAnalyzer._report(progress, row)
    out = terminal.getvalue()
    assert "window  3 test 2024-02-01..2024-03-02: return +1.23% (buy and hold -2.50%)" in out
    assert "1/10" in out and "window 3: test +1.23%" in out
    for quiet in (WalkForwardAnalyzer(show_progress=False), WalkForwardAnalyzer()):
        monkeypatch.setattr("sys.stderr", io.StringIO() if quiet.show_progress else terminal)
        with quiet._progress(10) as progress:
            assert progress.disable  # off by the flag, or because stderr is not a terminal
