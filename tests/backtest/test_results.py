"""Backtest and walk-forward results read like the mappings the guide indexes, and the backtest
strategies live in backtest/ (sentiment/ never imports backtest)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from backtest import BacktestResult, BacktraderEngine, NoTradeStrategy, WalkForwardResult
from backtest.results import summarize
from training.data import load_data

METRICS = {
    "total_return_pct": 1.0,
    "sharpe_ratio": 0.5,
    "sortino_ratio": 0.6,
    "max_drawdown_pct": 2.0,
    "win_rate": 0.5,
    "exposure_pct": 40.0,
    "num_trades": 2,
}


@pytest.fixture(scope="module")
def result() -> BacktestResult:
    candles = load_data("BTC/USDT", data_path="sample", days_back=3)
    return BacktraderEngine().run_backtest(data=candles, strategy=NoTradeStrategy)


def test_backtest_result_is_a_mapping_of_its_fields(result):
    assert f"{result['total_return_pct']:.2f}" == f"{result.total_return_pct:.2f}"
    assert result["metrics"]["sharpe_ratio"] == result.metrics["sharpe_ratio"]
    assert "benchmark" in result and "nope" not in result and 3 not in result
    assert result.get("benchmark") is result.benchmark and result.get("nope") is None
    assert list(result.keys())[:4] == ["total_return_pct", "final_value", "metrics", "benchmark"]
    assert len(result) == len(list(result)) == 9
    assert dict(result)["rejected_orders"] == result.rejected_orders
    with pytest.raises(KeyError):
        result["summary"]  # a method, not a field
    with pytest.raises(AttributeError):
        result.final_value = 0.0  # frozen
    assert result.summary()["benchmark_total_return_pct"] == result.benchmark["total_return_pct"]


def test_walk_forward_result_is_a_mapping_of_its_fields():
    rows = [
        {
            "train": METRICS,
            "test": {**METRICS, "total_return_pct": -1.0},
            "test_benchmark": METRICS,
            "train_bars": 240,
            "test_bars": 72,
        }
    ]
    results = WalkForwardResult(rows, summarize(rows), "run", 1.0)
    assert results["summary"]["test"]["avg_return"] == -1.0
    assert "avg_return_degradation" in results["summary"]["degradation"]
    assert set(results) == {"windows", "summary", "run_id", "seconds", "report_path"}
    assert "benchmark" not in results and results.get("report_path") is None
    assert {**results}["run_id"] == "run"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_sentiment_and_signals_never_import_backtest():
    root = Path(__file__).resolve().parents[2]
    for package in ("sentiment", "signals"):
        for path in (root / package).glob("*.py"):
            assert "backtest" not in _imports(path), path
    for path in (root / "signals").glob("*.py"):
        assert _imports(path) <= {"__future__", "math", "dataclasses", "numpy", "signals"}, path
