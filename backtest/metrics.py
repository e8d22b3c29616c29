"""Performance metrics from an equity curve and a list of fills, plus the buy-and-hold benchmark.

Pure functions on arrays, independent of backtrader, so every number a backtest reports can be
recomputed from its equity curve and trades.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

METRIC_NAMES = (
    "total_return_pct",
    "annual_return_pct",
    "sharpe_ratio",
    "sortino_ratio",
    "max_drawdown_pct",
    "calmar_ratio",
    "win_rate",
    "profit_factor",
    "num_trades",
    "exposure_pct",
)


def bars_per_year_of(index: pd.DatetimeIndex) -> float:
    """Bars per 365-day year implied by the median spacing of the index (crypto trades 24/7)."""
    if len(index) < 2:
        raise ValueError("need at least two bars to infer the bar interval")
    step = pd.Series(index).diff().median()
    if not step > pd.Timedelta(0):
        raise ValueError(f"cannot infer a bar interval from median spacing {step}")
    return pd.Timedelta(days=365) / step


def performance_metrics(
    equity: np.ndarray, trades: list[dict], in_market: np.ndarray, bars_per_year: float
) -> dict[str, float]:
    """Risk and return metrics of an equity curve.

    Args:
        equity: portfolio value at each bar's close, [n].
        trades: round trips from `trades_from_fills` (an open trade counts, marked to market).
        in_market: whether a position was held at each bar's close, [n].
        bars_per_year: bars in a year, to annualise.

    Returns:
        total_return_pct; annual_return_pct (compounded); sharpe_ratio and sortino_ratio
        (per-bar simple returns, zero risk-free rate, times sqrt(bars_per_year); sortino's
        denominator is the root mean square of negative returns, with zeros for the others);
        max_drawdown_pct (largest fall from a running peak); calmar_ratio (annual return over
        max drawdown, 0 without drawdown); win_rate (share of trades with positive net PnL,
        0..1); profit_factor (gross net profit over gross net loss; inf with no losing trade,
        0 with no trades); num_trades; exposure_pct (share of bars holding a position).
    """
    equity = np.asarray(equity, dtype=np.float64)
    returns = equity[1:] / equity[:-1] - 1.0
    scale = math.sqrt(bars_per_year)
    sharpe = sortino = 0.0
    if len(returns) >= 2 and returns.std(ddof=1) > 0:
        sharpe = returns.mean() / returns.std(ddof=1) * scale
    downside = math.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)) if len(returns) else 0.0
    if downside > 0:
        sortino = returns.mean() / downside * scale
    drawdown = 1.0 - equity / np.maximum.accumulate(equity)
    max_dd = float(drawdown.max())
    growth = equity[-1] / equity[0]
    annual = growth ** (bars_per_year / len(returns)) - 1.0 if len(returns) else 0.0
    pnl = np.array([t["pnl_net"] for t in trades], dtype=np.float64)
    gross_win, gross_loss = pnl[pnl > 0].sum(), -pnl[pnl < 0].sum()
    if gross_loss > 0:
        profit_factor = gross_win / gross_loss
    else:
        profit_factor = math.inf if gross_win > 0 else 0.0
    return {
        "total_return_pct": float((growth - 1.0) * 100.0),
        "annual_return_pct": float(annual * 100.0),
        "sharpe_ratio": float(sharpe),
        "sortino_ratio": float(sortino),
        "max_drawdown_pct": max_dd * 100.0,
        "calmar_ratio": float(annual / max_dd) if max_dd > 0 else 0.0,
        "win_rate": float((pnl > 0).mean()) if len(pnl) else 0.0,
        "profit_factor": float(profit_factor),
        "num_trades": len(trades),
        "exposure_pct": float(np.mean(np.asarray(in_market, dtype=bool)) * 100.0),
    }


def trades_from_fills(fills: list[dict], index: pd.DatetimeIndex, last_close: float) -> list[dict]:
    """Group fills into round trips: a trade opens when the position leaves zero and closes when
    it returns to zero (a fill that flips the side closes one trade and opens the next).

    Args:
        fills: dicts with bar (index of the fill's bar), size (signed), price, commission.
        index: bar timestamps, to date the trades.
        last_close: close of the last bar, to mark a trade still open at the end.

    Returns:
        One dict per trade: direction, entry_time, exit_time (None while open), entry_price and
        exit_price (size-weighted averages), size (largest absolute position), pnl (gross),
        commission, pnl_net, bars_held and open.
    """
    trades: list[dict] = []
    position, current = 0.0, None
    for fill in fills:
        size = remaining = float(fill["size"])
        while abs(remaining) > 1e-12 * abs(size):
            if current is None:
                current = {"side": math.copysign(1.0, remaining), "bar": fill["bar"], "legs": []}
            if math.copysign(1.0, remaining) == current["side"]:
                leg = remaining
            else:  # reduce; a fill that flips the side closes first, the rest opens the next
                leg = math.copysign(min(abs(remaining), abs(position)), remaining)
            share = float(fill["commission"]) * abs(leg) / abs(size)
            current["legs"].append((leg, float(fill["price"]), share))
            position += leg
            remaining -= leg
            if abs(position) <= 1e-12 * max(abs(leg), 1e-300):
                position = 0.0
                trades.append(_close_trade(current, index, fill["bar"], None))
                current = None
    if current is not None:
        trades.append(_close_trade(current, index, len(index) - 1, last_close))
    return trades


def _close_trade(current: dict, index: pd.DatetimeIndex, bar: int, mark: float | None) -> dict:
    side = current["side"]
    legs = current["legs"]
    opens = [(s, p) for s, p, _ in legs if math.copysign(1.0, s) == side]
    closes = [(s, p) for s, p, _ in legs if math.copysign(1.0, s) != side]
    opened = sum(abs(s) for s, _ in opens)
    closed = sum(abs(s) for s, _ in closes)
    entry = sum(abs(s) * p for s, p in opens) / opened
    exit_price = sum(abs(s) * p for s, p in closes) / closed if closed else None
    # Cash flows of the legs, plus the open remainder valued at the mark (no exit fee charged).
    pnl = -sum(s * p for s, p, _ in legs)
    if mark is not None:
        pnl += (opened - closed) * side * mark
    commission = sum(c for *_, c in legs)
    position, peak = 0.0, 0.0
    for s, _, _ in legs:
        position += s
        peak = max(peak, abs(position))
    return {
        "direction": "long" if side > 0 else "short",
        "entry_time": index[current["bar"]],
        "exit_time": None if mark is not None else index[bar],
        "entry_price": entry,
        "exit_price": exit_price,
        "size": peak,
        "pnl": pnl,
        "commission": commission,
        "pnl_net": pnl - commission,
        "bars_held": bar - current["bar"],
        "open": mark is not None,
    }


def buy_and_hold(
    candles: pd.DataFrame, cash: float, commission: float, slippage: float
) -> tuple[np.ndarray, list[dict]]:
    """Equity curve and fill of buying with all the cash at bar 1's open and holding to the end.

    Bar 1 is the first fill any strategy can get (a decision at bar 0's close fills at the next
    open); slippage raises the fill price, capped at that bar's high as the broker does.

    Returns:
        (equity [n], fills) where equity[0] is the starting cash.
    """
    o, h, c = (candles[col].to_numpy(dtype=np.float64) for col in ("open", "high", "close"))
    price = min(o[1] * (1.0 + slippage), h[1])
    size = cash / (price * (1.0 + commission))
    equity = np.empty(len(c))
    equity[0] = cash
    equity[1:] = size * c[1:]
    fills = [{"bar": 1, "size": size, "price": price, "commission": size * price * commission}]
    return equity, fills
