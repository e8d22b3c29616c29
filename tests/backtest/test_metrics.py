"""Every reported metric recomputed independently from the equity curve and the trades."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from backtest import BacktraderEngine
from backtest.metrics import trades_from_fills
from backtest.strategies import directional_confidence
from training.data import load_data

from .test_engine import SmaCross


@pytest.fixture(scope="module")
def result():
    bars = load_data("ETH/USDT", data_path="sample", days_back=45)
    return BacktraderEngine(commission=0.001, slippage=0.0005).run_backtest(
        bars, SmaCross, {"fast": 8, "slow": 30}
    )


def _expected(equity: pd.Series, pnl_net: pd.Series, position: pd.Series) -> dict:
    """The metric definitions, written again with pandas."""
    per_year = 24 * 365  # hourly bars
    rets = equity.pct_change().dropna()
    downside = np.sqrt((rets.clip(upper=0) ** 2).mean())
    drawdown = -(equity / equity.cummax() - 1).min()
    annual = (equity.iloc[-1] / equity.iloc[0]) ** (per_year / len(rets)) - 1
    wins, losses = pnl_net[pnl_net > 0].sum(), -pnl_net[pnl_net < 0].sum()
    return {
        "total_return_pct": (equity.iloc[-1] / equity.iloc[0] - 1) * 100,
        "annual_return_pct": annual * 100,
        "sharpe_ratio": rets.mean() / rets.std() * math.sqrt(per_year),
        "sortino_ratio": rets.mean() / downside * math.sqrt(per_year),
        "max_drawdown_pct": drawdown * 100,
        "calmar_ratio": annual / drawdown,
        "win_rate": (pnl_net > 0).mean(),
        "profit_factor": wins / losses if losses else math.inf,
        "num_trades": len(pnl_net),
        "exposure_pct": (position != 0).mean() * 100,
    }


def test_strategy_metrics_match_independent_recomputation(result):
    curve = result.equity_curve
    pnl = pd.Series([t["pnl_net"] for t in result.trades])
    assert len(pnl) >= 5 and (pnl > 0).any() and (pnl < 0).any()
    expected = _expected(curve["equity"], pnl, curve["position"])
    assert set(result.metrics) == set(expected)
    for name, value in expected.items():
        assert result.metrics[name] == pytest.approx(value, rel=1e-9), name
    assert result.final_value == curve["equity"].iloc[-1]
    # Trades account for every cent: their net PnL sums to the change in equity.
    assert pnl.sum() == pytest.approx(result.final_value - 10_000, rel=1e-9)


def test_benchmark_metrics_match_independent_recomputation(result):
    curve = result.equity_curve
    bench = curve["benchmark_equity"]
    held = pd.Series(np.arange(len(curve)) >= 1)
    pnl = pd.Series([bench.iloc[-1] - 10_000])
    expected = _expected(bench, pnl, held.astype(float))
    for name, value in expected.items():
        assert result.benchmark[name] == pytest.approx(value, rel=1e-9), name


def test_trades_from_fills_splits_a_flip_and_marks_an_open_trade():
    index = pd.date_range("2024-01-01", periods=6, freq="1h", tz="UTC")
    fills = [
        {"bar": 1, "size": 2.0, "price": 10.0, "commission": 0.02},
        {"bar": 3, "size": -3.0, "price": 12.0, "commission": 0.036},
    ]
    long_trade, short_trade = trades_from_fills(fills, index, last_close=11.0)
    assert long_trade["direction"] == "long" and not long_trade["open"]
    assert long_trade["pnl"] == pytest.approx(4.0)
    assert long_trade["commission"] == pytest.approx(0.02 + 0.024)
    assert long_trade["exit_time"] == index[3] and long_trade["bars_held"] == 2
    assert short_trade["direction"] == "short" and short_trade["open"]
    assert short_trade["pnl"] == pytest.approx(1.0)  # short 1 at 12, marked at 11
    assert short_trade["pnl_net"] == pytest.approx(1.0 - 0.012)
    assert short_trade["exit_time"] is None and short_trade["bars_held"] == 2


def test_directional_confidence_is_the_share_of_the_interval_agreeing():
    pred = np.array([0.002, 0.002, -0.003, 0.0, 0.05])
    lower = np.array([-0.010, -0.030, -0.010, -0.01, 0.01])
    upper = np.array([0.014, 0.034, 0.004, 0.01, 0.09])
    conf = directional_confidence(pred, lower, upper)
    np.testing.assert_allclose(conf, [0.014 / 0.024, 0.034 / 0.064, 0.010 / 0.014, 0.5, 1.0])
    # Same forecast, wider interval: less confident.
    assert conf[1] < conf[0]
