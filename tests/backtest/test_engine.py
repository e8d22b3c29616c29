"""The engine on hand-built bars: fills, fees, slippage and final values computed by hand; no
look-ahead; long/flat and cash rules; clear errors for bad input."""

from __future__ import annotations

import backtrader as bt
import numpy as np
import pytest

from backtest import BacktraderEngine, LookAheadError, StrategyParamError
from training.data import load_data
from training.validation import DataValidationError

from .conftest import make_candles


class Scripted(bt.Strategy):
    """Places the orders of `script` {bar: size or "close"} at those bars."""

    params = (("script", {}),)

    def next(self):
        order = self.p.script.get(len(self) - 1)
        if order == "close":
            self.close()
        elif order is not None:
            (self.buy if order > 0 else self.sell)(size=abs(order))


class SmaCross(bt.Strategy):
    """A plain indicator strategy: long while the fast SMA is above the slow one."""

    params = (("fast", 5), ("slow", 20))

    def __init__(self):
        self.cross = bt.indicators.CrossOver(
            bt.indicators.SMA(period=self.p.fast), bt.indicators.SMA(period=self.p.slow)
        )

    def next(self):
        if self.cross > 0 and not self.position:
            self.buy(size=0.9 * self.broker.getvalue() / self.data.close[0])
        elif self.cross < 0 and self.position:
            self.close()


class PeekNextClose(bt.Strategy):
    """Cheats: buys when the NEXT bar closes higher."""

    def next(self):
        if self.data.close[1] > self.data.close[0] and not self.position:
            self.buy(size=1)


LONG_TRADE = make_candles(
    [
        (100, 101, 99, 100),
        (102, 104, 101, 103),
        (104, 106, 103, 105),
        (110, 112, 108, 111),
        (111, 112, 110, 111),
    ]
)


def test_long_trade_fees_slippage_and_final_value_by_hand():
    engine = BacktraderEngine(initial_cash=10_000, commission=0.002, slippage=0.01)
    result = engine.run_backtest(LONG_TRADE, Scripted, {"script": {0: 50, 2: "close"}})
    # Decided at bar 0, filled at bar 1's open 102 plus 1% slippage; sold at bar 3's open less 1%.
    buy, sell = 102 * 1.01, 110 * 0.99
    assert [f["bar"] for f in result.fills] == [1, 3]
    assert result.fills[0]["price"] == pytest.approx(buy)
    assert result.fills[1]["price"] == pytest.approx(sell)
    cash_after_buy = 10_000 - 50 * buy - 0.002 * 50 * buy
    final = cash_after_buy + 50 * sell - 0.002 * 50 * sell
    expected_equity = [10_000, cash_after_buy + 50 * 103, cash_after_buy + 50 * 105, final, final]
    np.testing.assert_allclose(result.equity_curve["equity"], expected_equity, rtol=1e-12)
    assert result.final_value == pytest.approx(10_272.808)
    assert result.total_return_pct == pytest.approx(2.72808)
    (trade,) = result.trades
    assert trade["pnl"] == pytest.approx(50 * (sell - buy))
    assert trade["commission"] == pytest.approx(0.002 * 50 * (buy + sell))
    assert trade["pnl_net"] == pytest.approx(final - 10_000)
    assert trade["bars_held"] == 2 and not trade["open"]
    np.testing.assert_allclose(result.equity_curve["position"], [0, 50, 50, 0, 0])


def test_benchmark_is_buy_and_hold_from_the_first_possible_fill():
    engine = BacktraderEngine(initial_cash=10_000, commission=0.002, slippage=0.01)
    result = engine.run_backtest(LONG_TRADE, Scripted)
    size = 10_000 / (102 * 1.01 * 1.002)
    np.testing.assert_allclose(
        result.equity_curve["benchmark_equity"], [10_000, *(size * c for c in (103, 105, 111, 111))]
    )
    assert result.benchmark["total_return_pct"] == pytest.approx((size * 111 / 10_000 - 1) * 100)
    assert result.benchmark["num_trades"] == 1 and result.benchmark["exposure_pct"] == 80.0
    assert result.metrics["num_trades"] == 0 and result.final_value == 10_000


def test_short_round_trip_by_hand_when_allowed_and_refused_by_default():
    bars = make_candles(
        [(100, 101, 99, 100), (100, 101, 98, 99), (97, 98, 95, 96), (94, 95, 93, 94)]
    )
    script = {"script": {0: -10, 2: "close"}}
    engine = BacktraderEngine(commission=0.002, slippage=0.01, allow_short=True)
    result = engine.run_backtest(bars, Scripted, script)
    short, cover = 100 * 0.99, 94 * 1.01
    cash = 10_000 + 10 * short - 0.002 * 10 * short
    assert result.equity_curve["equity"].iloc[1] == pytest.approx(cash - 10 * 99)
    final = cash - 10 * cover - 0.002 * 10 * cover
    assert result.final_value == pytest.approx(final)
    (trade,) = result.trades
    assert trade["direction"] == "short" and trade["pnl"] == pytest.approx(10 * (short - cover))
    long_flat = BacktraderEngine(commission=0.002, slippage=0.01).run_backtest(
        bars, Scripted, script
    )
    assert long_flat.fills == [] and long_flat.rejected_orders == 1
    assert long_flat.final_value == 10_000


def test_fractional_sizes_let_a_small_account_trade_btc():
    bars = make_candles([(60_000, 60_100, 59_900, 60_000)] * 3)
    engine = BacktraderEngine(initial_cash=10_000, commission=0.001, slippage=0.0)
    result = engine.run_backtest(bars, Scripted, {"script": {0: 0.15}})
    assert result.equity_curve["position"].iloc[-1] == pytest.approx(0.15)
    assert result.equity_curve["cash"].iloc[-1] == pytest.approx(10_000 - 9_000 - 9)


def test_cash_never_goes_negative_on_a_gap_up():
    # Affordable at the decision close (100) but not at the next open (110): refused.
    bars = make_candles([(100, 101, 99, 100), (110, 111, 109, 110), (110, 111, 109, 110)])
    result = BacktraderEngine(commission=0.001, slippage=0.0).run_backtest(
        bars, Scripted, {"script": {0: 99}}
    )
    assert result.fills == [] and result.rejected_orders == 1
    assert (result.equity_curve["cash"] >= 0).all()


def test_strategy_that_peeks_at_the_next_bar_is_caught():
    bars = load_data("BTC/USDT", data_path="sample", days_back=5)
    with pytest.raises(LookAheadError, match=r"PeekNextClose.*not available at decision time"):
        BacktraderEngine().run_backtest(bars, PeekNextClose)


def test_results_up_to_a_bar_do_not_depend_on_later_bars():
    """Equity and fills through bar k are identical whether or not the bars after k exist."""
    bars = load_data("BTC/USDT", data_path="sample", days_back=20)
    engine = BacktraderEngine()
    full = engine.run_backtest(bars, SmaCross)
    assert full.metrics["num_trades"] >= 3
    for k in (100, 250, 400):
        cut = engine.run_backtest(bars.iloc[:k], SmaCross)
        np.testing.assert_array_equal(
            cut.equity_curve["equity"], full.equity_curve["equity"].iloc[:k]
        )
        assert cut.fills == [f for f in full.fills if f["bar"] < k]


def test_bad_input_is_refused_with_clear_messages():
    engine = BacktraderEngine()
    with pytest.raises(DataValidationError, match=r"missing columns \['volume'\]"):
        engine.run_backtest(LONG_TRADE.drop(columns="volume"), Scripted)
    with pytest.raises(ValueError, match="has 2 bars; need at least 3"):
        engine.run_backtest(LONG_TRADE.iloc[:2], Scripted)
    with pytest.raises(StrategyParamError, match=r"'fast' must be int, got str '5'"):
        engine.run_backtest(LONG_TRADE, SmaCross, {"fast": "5"})
    with pytest.raises(StrategyParamError, match=r"no parameter\(s\) \['fats'\]"):
        engine.run_backtest(LONG_TRADE, SmaCross, {"fats": 5})
    with pytest.raises(StrategyParamError, match="must be a backtrader Strategy class"):
        engine.run_backtest(LONG_TRADE, object)
    with pytest.raises(ValueError, match="commission"):
        BacktraderEngine(commission=-0.1)
