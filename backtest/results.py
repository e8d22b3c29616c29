"""What backtests and walk-forward analyses return: typed, frozen, and readable as mappings.

Both result types are `collections.abc.Mapping`s over their fields, so the guide's
`results["total_return_pct"]`, `results["metrics"]["sharpe_ratio"]`,
`results["summary"]["test"]["avg_return"]`, `"benchmark" in results`, `results.get(...)`,
`results.keys()` and `dict(results)` all work next to attribute access (`results.metrics`).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


class FieldMapping(Mapping):
    """Read-only mapping view of a dataclass's fields: `result["x"] is result.x`."""

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def _names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))


@dataclass(frozen=True, eq=False)
class BacktestResult(FieldMapping):
    """What a backtest returns.

    Attributes:
        total_return_pct, final_value: of the strategy.
        metrics: performance_metrics of the strategy's equity curve and trades.
        benchmark: the same metrics for buy-and-hold over the same bars and costs.
        equity_curve: DataFrame indexed by bar time with equity, cash, position and
            benchmark_equity.
        trades: round trips (see metrics.trades_from_fills).
        fills: every execution: time, bar, size (signed), price, commission.
        rejected_orders: orders refused (not enough cash, or a short while long/flat).
        settings: the engine settings used.
    """

    total_return_pct: float
    final_value: float
    metrics: dict[str, float]
    benchmark: dict[str, float]
    equity_curve: pd.DataFrame
    trades: list[dict]
    fills: list[dict]
    rejected_orders: int
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Flat metrics: the strategy's, then the benchmark's prefixed `benchmark_`."""
        return {**self.metrics, **{f"benchmark_{k}": v for k, v in self.benchmark.items()}}


@dataclass(frozen=True, eq=False)
class WalkForwardResult(FieldMapping):
    """What a walk-forward analysis returns.

    Attributes:
        windows: one row per window: dates, bar counts, train/test/test_benchmark metrics,
            model_metrics, its MLflow run_id and model_uri, seconds.
        summary: {"train": ..., "test": ..., "degradation": ...} (see `summarize`).
        run_id: the MLflow parent run.
        seconds: wall time of the analysis.
        report_path: the saved chart, when an output directory was given.
    """

    windows: list[dict]
    summary: dict
    run_id: str
    seconds: float
    report_path: Path | None = None


def scaled_in_sample_return(row: dict) -> float:
    """A window's in-sample return % compounded down to its test period's length."""
    growth = 1 + row["train"]["total_return_pct"] / 100
    return (growth ** (row["test_bars"] / row["train_bars"]) - 1) * 100


def summarize(rows: list[dict]) -> dict:
    """Average in-sample (train) and out-of-sample (test) metrics and their degradation.

    avg_return_degradation compares like with like: each window's in-sample return is first
    compounded down to the test period's length (train periods are longer), then the
    out-of-sample return is subtracted; percentage points, averaged over windows.
    avg_sharpe_degradation is train avg_sharpe - test avg_sharpe (both annualised).
    """

    def side(key: str) -> dict:
        metrics = [r[key] for r in rows]

        def mean(name: str) -> float:
            return float(statistics.fmean(m[name] for m in metrics))

        return {
            "avg_return": mean("total_return_pct"),
            "avg_sharpe": mean("sharpe_ratio"),
            "avg_sortino": mean("sortino_ratio"),
            "avg_max_drawdown": mean("max_drawdown_pct"),
            "avg_win_rate": mean("win_rate"),
            "avg_exposure": mean("exposure_pct"),
            "total_trades": int(sum(m["num_trades"] for m in metrics)),
        }

    train, test = side("train"), side("test")
    test["avg_benchmark_return"] = float(
        statistics.fmean(r["test_benchmark"]["total_return_pct"] for r in rows)
    )
    test["profitable_windows"] = float(np.mean([r["test"]["total_return_pct"] > 0 for r in rows]))
    scaled = [scaled_in_sample_return(r) - r["test"]["total_return_pct"] for r in rows]
    degradation = {
        "avg_return_degradation": float(statistics.fmean(scaled)),
        "avg_sharpe_degradation": train["avg_sharpe"] - test["avg_sharpe"],
    }
    return {"train": train, "test": test, "degradation": degradation}
