"""Charts and MLflow logging for backtests and walk-forward analyses.

Figures are built with the object-oriented matplotlib API (no pyplot state), so they are safe
in servers and worker processes.
"""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import numpy as np
from matplotlib.figure import Figure

from backtest.engine import BacktestResult


def log_metrics(metrics: dict[str, float]) -> None:
    """Log the finite metrics to the active MLflow run (an infinite profit factor is skipped)."""
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if math.isfinite(float(v))})


def drawdown_pct(values) -> np.ndarray:
    """Percentage fall of each value from its running peak (0 at a new high, negative below)."""
    values = np.asarray(values, dtype=np.float64)
    return (values / np.maximum.accumulate(values) - 1.0) * 100.0


def save_figure(fig: Figure, name: str, output_dir: str | Path | None = None) -> Path | None:
    """Save `fig` as output_dir/name (when given) and log it to the active MLflow run."""
    path = None
    if output_dir is not None:
        path = Path(output_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    if mlflow.active_run() is not None:
        mlflow.log_figure(fig, name)
    return path


def save_html(text: str, name: str, output_dir=None, run_id: str | None = None) -> Path | None:
    """Save an HTML report as output_dir/name (when given) and log it to the run `run_id`, or
    to the active run (the MLflow UI shows HTML artifacts)."""
    path = None
    if output_dir is not None:
        path = Path(output_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if run_id is not None:
        mlflow.MlflowClient().log_text(run_id, text, name)
    elif mlflow.active_run() is not None:
        mlflow.log_text(text, name)
    return path


def plot_equity(result: BacktestResult, title: str = "Backtest") -> Figure:
    """Equity against buy-and-hold with trade entries and exits marked, and drawdowns below."""
    curve = result.equity_curve
    fig = Figure(figsize=(11, 6.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot(curve.index, curve["equity"], lw=1.2, label="strategy")
    top.plot(curve.index, curve["benchmark_equity"], lw=1.0, alpha=0.7, label="buy and hold")
    equity = curve["equity"]
    for trade in result.trades:
        marker_in = "^" if trade["direction"] == "long" else "v"
        top.scatter(
            trade["entry_time"],
            equity.loc[trade["entry_time"]],
            marker=marker_in,
            color="tab:green",
            s=28,
            zorder=3,
        )
        if trade["exit_time"] is not None:
            top.scatter(
                trade["exit_time"],
                equity.loc[trade["exit_time"]],
                marker="x",
                color="tab:red",
                s=24,
                zorder=3,
            )
    top.scatter([], [], marker="^", color="tab:green", label="entry")
    top.scatter([], [], marker="x", color="tab:red", label="exit")
    metrics, bench = result.metrics, result.benchmark
    top.set_title(
        f"{title}: return {metrics['total_return_pct']:.1f}% (buy and hold "
        f"{bench['total_return_pct']:.1f}%), Sharpe {metrics['sharpe_ratio']:.2f}, "
        f"{metrics['num_trades']} trades"
    )
    top.set_ylabel("portfolio value")
    top.legend(loc="upper left")
    for column, label in (("equity", "strategy"), ("benchmark_equity", "buy and hold")):
        drawdown = drawdown_pct(curve[column])
        if column == "equity":
            bottom.fill_between(curve.index, drawdown, 0.0, alpha=0.4, label=label)
        else:
            bottom.plot(curve.index, drawdown, lw=0.8, alpha=0.7, label=label)
    bottom.set_ylabel("drawdown %")
    bottom.legend(loc="lower left")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def plot_walk_forward(rows: list[dict]) -> Figure:
    """In-sample vs out-of-sample return and Sharpe per walk-forward window."""
    fig = Figure(figsize=(max(7, 0.9 * len(rows) + 3), 6.5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(rows))
    width = 0.27
    for ax, metric, label in (
        (top, "total_return_pct", "return % over the period"),
        (bottom, "sharpe_ratio", "Sharpe (annualised)"),
    ):
        ax.bar(x - width, [r["train"][metric] for r in rows], width, label="in sample (train)")
        ax.bar(x, [r["test"][metric] for r in rows], width, label="out of sample (test)")
        ax.bar(
            x + width,
            [r["test_benchmark"][metric] for r in rows],
            width,
            alpha=0.6,
            label="buy and hold (test)",
        )
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_ylabel(label)
    top.set_title("Walk-forward: in-sample vs out-of-sample per window")
    top.legend(loc="best", fontsize=8)
    bottom.set_xticks(x, [f"{r['index']}\n{r['test_start'][:10]}" for r in rows], fontsize=8)
    bottom.set_xlabel("window (test start)")
    fig.tight_layout()
    return fig


def log_backtest(result: BacktestResult, name: str = "equity_curve.png", output_dir=None):
    """Log a backtest's metrics, benchmark, trades and equity chart to the active run.

    Returns:
        The saved PNG path, or None without output_dir.
    """
    log_metrics(result.summary())
    mlflow.log_metric("final_value", result.final_value)
    mlflow.log_metric("rejected_orders", result.rejected_orders)
    trades = [
        {k: (str(v) if k.endswith("_time") else v) for k, v in t.items()} for t in result.trades
    ]
    mlflow.log_dict({"trades": trades}, "trades.json")
    return save_figure(plot_equity(result), name, output_dir)
