"""Interactive HTML reports (Plotly) for a backtest and a walk-forward analysis.

Each report is one self-contained file: plotly.js is embedded from the installed package, never
fetched from a CDN, so the page opens offline, on a closed network and in the MLflow UI (which
shows HTML artifacts).

```python
page = backtest_report(result, candles, forecast)  # forecast: strategies.forecast_table(...)
Path("backtest_report.html").write_text(page, encoding="utf-8")
Path("walk_forward_report.html").write_text(walk_forward_report(wf_result), encoding="utf-8")
```

`mltrade backtest` and `mltrade walk-forward` write these next to their PNGs and log them to
their MLflow runs (backtest.jobs).
"""

from __future__ import annotations

import html
from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from backtest.report import drawdown_pct
from backtest.results import BacktestResult, scaled_in_sample_return

__all__ = [
    "backtest_figure",
    "backtest_report",
    "page",
    "walk_forward_figure",
    "walk_forward_report",
]

STRATEGY, BENCHMARK = "#1f77b4", "#7f7f7f"
BAND = "rgba(255, 127, 14, 0.18)"
METRICS = (
    ("total_return_pct", "Total return %"),
    ("annual_return_pct", "Annual return %"),
    ("sharpe_ratio", "Sharpe"),
    ("sortino_ratio", "Sortino"),
    ("max_drawdown_pct", "Max drawdown %"),
    ("win_rate", "Win rate"),
    ("profit_factor", "Profit factor"),
    ("num_trades", "Trades"),
    ("exposure_pct", "Exposure %"),
)


def _band(candles: pd.DataFrame, forecast: pd.DataFrame) -> dict[str, pd.Series]:
    """The forecast made at each bar's close, in price terms, placed at the bar it forecasts."""
    rows = forecast.reindex(candles.index)
    close = candles["close"]
    shifted = {
        name: (close * (1.0 + rows[column])).shift(1)
        for name, column in (
            ("lower", "lower_return"),
            ("upper", "upper_return"),
            ("predicted", "predicted_return"),
        )
    }
    return {name: series.dropna() for name, series in shifted.items()}


def _trade_markers(trades: list[dict]) -> list[go.Scatter]:
    exits = [t for t in trades if t["exit_time"] is not None]
    return [
        go.Scatter(
            x=[t["entry_time"] for t in trades],
            y=[t["entry_price"] for t in trades],
            mode="markers",
            name="entries",
            text=[f"{t['direction']}, net P&L {t['pnl_net']:.2f}" for t in trades],
            marker={
                "symbol": [
                    "triangle-up" if t["direction"] == "long" else "triangle-down" for t in trades
                ],
                "color": "#2ca02c",
                "size": 9,
            },
        ),
        go.Scatter(
            x=[t["exit_time"] for t in exits],
            y=[t["exit_price"] for t in exits],
            mode="markers",
            name="exits",
            text=[f"exit after {t['bars_held']} bars" for t in exits],
            marker={"symbol": "x", "color": "#d62728", "size": 8},
        ),
    ]


def backtest_figure(
    result: BacktestResult,
    candles: pd.DataFrame,
    forecast: pd.DataFrame | None = None,
    title: str = "Backtest",
) -> go.Figure:
    """Price with entries, exits and the forecast's interval band; equity against buy-and-hold;
    drawdowns.

    Args:
        result: what BacktraderEngine.run_backtest returned for `candles`.
        candles: the backtested candles (OHLCV, indexed by bar time).
        forecast: per-bar forecasts (`backtest.strategies.forecast_table`), when the strategy
            had them: the interval band and predicted close are drawn at the bar they forecast.
        title: the figure's title.
    """
    curve = result.equity_curve
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.04,
        row_heights=(0.45, 0.35, 0.2),
        subplot_titles=("Price", "Portfolio value", "Drawdown %"),
    )
    price: list[go.Scatter] = []
    if forecast is not None:
        band = _band(candles, forecast)
        edge = {"legendgroup": "band", "name": "forecast interval", "line": {"width": 0}}
        price += [
            go.Scatter(x=band["upper"].index, y=band["upper"], showlegend=False, **edge),
            go.Scatter(
                x=band["lower"].index, y=band["lower"], fill="tonexty", fillcolor=BAND, **edge
            ),
            go.Scatter(
                x=band["predicted"].index,
                y=band["predicted"],
                name="predicted close",
                line={"color": "#ff7f0e", "width": 1, "dash": "dot"},
                visible="legendonly",  # it would hide the close under it; a click shows it
            ),
        ]
    price.append(
        go.Scatter(
            x=candles.index, y=candles["close"], name="close", line={"color": "black", "width": 1}
        )
    )
    for trace in [*price, *_trade_markers(result.trades)]:
        fig.add_trace(trace, row=1, col=1)
    for column, name, color in (
        ("equity", "strategy", STRATEGY),
        ("benchmark_equity", "buy and hold", BENCHMARK),
    ):
        line = {"color": color, "width": 1.3}
        fig.add_trace(go.Scatter(x=curve.index, y=curve[column], name=name, line=line), 2, 1)
        drawdown = go.Scatter(
            x=curve.index,
            y=drawdown_pct(curve[column]),
            name=f"{name} drawdown",
            line=line,
            fill="tozeroy" if column == "equity" else None,
        )
        fig.add_trace(drawdown, 3, 1)
    metrics, bench = result.metrics, result.benchmark
    fig.update_layout(
        title=(
            f"{title}: return {metrics['total_return_pct']:.1f}% (buy and hold "
            f"{bench['total_return_pct']:.1f}%), Sharpe {metrics['sharpe_ratio']:.2f}, "
            f"{metrics['num_trades']} trades"
        ),
        height=900,
        hovermode="x",
        template="plotly_white",
    )
    return fig


def walk_forward_figure(windows: list[dict]) -> go.Figure:
    """Per window: in-sample against out-of-sample return and Sharpe, and their degradation.

    In-sample returns are compounded down to the test period's length (training periods are
    longer), as the summary's avg_return_degradation does, so the bars compare like with like.
    """
    labels = [f"{w['index']}: {w['test_start'][:10]}" for w in windows]
    scaled = [scaled_in_sample_return(w) for w in windows]
    test_return = [w["test"]["total_return_pct"] for w in windows]
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=(
            "Return % over the test period's length",
            "Sharpe (annualised)",
            "Degradation: in sample minus out of sample",
        ),
        specs=[[{}], [{}], [{"secondary_y": True}]],
    )
    raw = [f"whole training period: {w['train']['total_return_pct']:.2f}%" for w in windows]
    sides = (("train", "in sample", "#9467bd"), ("test", "out of sample", STRATEGY))
    sides += (("test_benchmark", "buy and hold", BENCHMARK),)
    returns = {"train": scaled, "test": test_return}
    for key, name, color in sides:
        style = {"name": name, "legendgroup": name, "marker_color": color}
        ret = returns[key] if key in returns else [w[key]["total_return_pct"] for w in windows]
        hover = {"text": raw, "textposition": "none"} if key == "train" else {}
        fig.add_trace(go.Bar(x=labels, y=ret, **style, **hover), 1, 1)
        sharpe = [w[key]["sharpe_ratio"] for w in windows]
        fig.add_trace(go.Bar(x=labels, y=sharpe, showlegend=False, **style), 2, 1)
    fig.add_trace(
        go.Bar(
            x=labels,
            y=np.subtract(scaled, test_return),
            name="return degradation (pp)",
            marker_color="#8c564b",
        ),
        row=3,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=labels,
            y=[w["train"]["sharpe_ratio"] - w["test"]["sharpe_ratio"] for w in windows],
            name="Sharpe degradation",
            mode="lines+markers",
            line={"color": "#e377c2"},
        ),
        row=3,
        col=1,
        secondary_y=True,
    )
    fig.update_yaxes(title_text="pp", row=3, col=1, secondary_y=False)
    fig.update_yaxes(title_text="Sharpe", row=3, col=1, secondary_y=True, showgrid=False)
    fig.update_xaxes(title_text="window: test start", row=3, col=1)
    fig.update_layout(
        title="Walk-forward: in sample vs out of sample per window",
        barmode="group",
        height=900,
        template="plotly_white",
    )
    return fig


def _table(title: str, columns: list[str], rows: list[tuple]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>"


def page(figure: go.Figure, title: str, tables: list[str] = ()) -> str:
    """A self-contained HTML page: the figure with plotly.js inline, then the tables."""
    plot = figure.to_html(full_html=False, include_plotlyjs=True, config={"responsive": True})
    style = (
        "body{font-family:sans-serif;margin:1.5em;color:#222}"
        "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
        "td,th{border:1px solid #ccc;padding:0.25em 0.7em;text-align:right}"
        "th:first-child,td:first-child{text-align:left}"
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{style}</style></head>"
        f"<body>{plot}{''.join(tables)}</body></html>\n"
    )


def backtest_report(
    result: BacktestResult,
    candles: pd.DataFrame,
    forecast: pd.DataFrame | None = None,
    title: str = "Backtest",
) -> str:
    """The backtest's HTML page: backtest_figure and the strategy's metrics next to
    buy-and-hold's (arguments as backtest_figure's)."""
    rows = [(label, result.metrics[k], result.benchmark[k]) for k, label in METRICS]
    return page(
        backtest_figure(result, candles, forecast, title),
        title,
        [_table("Metrics", ["", "strategy", "buy and hold"], rows)],
    )


def walk_forward_report(result: Mapping, title: str = "Walk-forward") -> str:
    """The walk-forward HTML page: walk_forward_figure and the summary.

    Args:
        result: a WalkForwardResult, or any mapping with its `windows` and `summary`.
        title: the page title.
    """
    summary = result["summary"]
    train, test = summary["train"], summary["test"]
    rows = [(k, train[k], test[k]) for k in train]
    rows += [(k, "", test[k]) for k in test if k not in train]
    degradation = list(summary["degradation"].items())
    return page(
        walk_forward_figure(list(result["windows"])),
        title,
        [
            _table("Averages over windows", ["", "in sample", "out of sample"], rows),
            _table("Degradation", ["", "value"], degradation),
        ],
    )
