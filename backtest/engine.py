"""Backtests on backtrader with realistic defaults: an order decided at bar t fills at bar t+1's
open, commission and slippage on both sides, fractional sizes, long/flat unless shorting is
allowed, and cash that never goes negative.

Bars are fed one at a time (no preloading), so a strategy cannot read a future bar: indexing
`data.close[1]` raises `LookAheadError` instead of silently returning tomorrow's price.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from types import NoneType

import backtrader as bt
import numpy as np
import pandas as pd

from backtest.metrics import (
    bars_per_year_of,
    buy_and_hold,
    performance_metrics,
    trades_from_fills,
)
from backtest.results import BacktestResult
from training.validation import bars_per_year, validate_ohlcv

# 1970-01-01 as a backtrader date number (proleptic Gregorian ordinal, in days).
_EPOCH_ORDINAL = 719163.0


class LookAheadError(RuntimeError):
    """Raised when a strategy reads a bar after the one it is deciding on."""


class StrategyParamError(TypeError):
    """Raised for an unknown strategy parameter or one of the wrong type."""


class CandleFeed(bt.feed.DataBase):
    """Feeds validated candles bar by bar from NumPy arrays (fast, no pandas per bar).

    `candles` keeps the DataFrame so strategies that precompute (MLBacktraderStrategy) can
    build windows; they must index it only up to the current bar.
    """

    def __init__(self, candles: pd.DataFrame):
        super().__init__()
        self.candles = candles
        self._values = candles.to_numpy(dtype=np.float64)
        self._dates = _EPOCH_ORDINAL + candles.index.as_unit("s").asi8 / 86400.0
        self._next = 0

    def start(self) -> None:
        super().start()
        self._next = 0

    def _load(self) -> bool:
        i = self._next
        if i >= len(self._values):
            return False
        o, h, lo, c, v = self._values[i]
        lines = self.lines
        lines.datetime[0] = self._dates[i]
        lines.open[0], lines.high[0], lines.low[0], lines.close[0] = o, h, lo, c
        lines.volume[0], lines.openinterest[0] = v, 0.0
        self._next = i + 1
        return True


class FractionalCommission(bt.CommInfoBase):
    """Percentage commission on traded value, with fractional (float) order sizes."""

    params = (
        ("stocklike", True),
        ("commtype", bt.CommInfoBase.COMM_PERC),
        ("percabs", True),
    )

    def getsize(self, price: float, cash: float) -> float:
        return self.p.leverage * cash / price


class RealisticBroker(bt.brokers.BackBroker):
    """BackBroker that refuses orders that would open a short unless `allow_short` is set.

    Buys that would take cash below zero at the fill price are refused by BackBroker itself
    (status Margin), so cash never goes negative.
    """

    params = (("allow_short", False),)

    def submit(self, order, check=True):
        if not self.p.allow_short and order.issell():
            queued = sum(
                o.executed.remsize
                for o in (*self.submitted, *self.pending)
                if o is not None and o.data is order.data and o.alive()
            )
            after = self.getposition(order.data).size + queued + order.executed.remsize
            if after < -1e-9 * abs(order.size):
                order.reject(self)
                self.notify(order)
                return order
        return super().submit(order, check)


class _Recorder(bt.Analyzer):
    """Records equity, cash and position at every bar's close, and every fill."""

    def start(self) -> None:
        self.value, self.cash, self.position = [], [], []
        self.fills, self.rejected = [], 0
        self._seen: dict[int, tuple[float, float, float]] = {}

    def notify_order(self, order) -> None:
        if order.status in (order.Rejected, order.Margin):
            self.rejected += 1
        size, price, comm = order.executed.size, order.executed.price, order.executed.comm
        old_size, old_price, old_comm = self._seen.get(order.ref, (0.0, 0.0, 0.0))
        if size != old_size:
            delta = size - old_size
            self.fills.append(
                {
                    "bar": len(self.strategy) - 1,
                    "size": delta,
                    "price": (size * price - old_size * old_price) / delta,
                    "commission": comm - old_comm,
                }
            )
            self._seen[order.ref] = (size, price, comm)

    def next(self) -> None:
        broker = self.strategy.broker
        self.value.append(broker.getvalue())
        self.cash.append(broker.getcash())
        self.position.append(self.strategy.position.size)


def check_strategy_params(strategy: type, params: dict) -> None:
    """Refuse unknown parameter names and values whose type differs from the default's.

    A strategy may declare `param_types = {"name": (type, ...)}` where the default alone does
    not say what is allowed (e.g. a None default). An int is accepted where a float is expected.

    Raises:
        StrategyParamError: naming the parameter, the expected and the given type.
    """
    if not (isinstance(strategy, type) and issubclass(strategy, bt.Strategy)):
        raise StrategyParamError(f"strategy must be a backtrader Strategy class, got {strategy!r}")
    defaults = dict(strategy.params._getitems())
    declared = getattr(strategy, "param_types", {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise StrategyParamError(
            f"{strategy.__name__} has no parameter(s) {unknown}; known: {sorted(defaults)}"
        )
    for name, value in params.items():
        default = defaults[name]
        if name in declared:
            allowed = declared[name]
        elif default is None:
            continue
        elif isinstance(default, bool):
            allowed = (bool,)
        elif isinstance(default, float):
            allowed = (float, int)
        else:
            allowed = (type(default),)
        bad_bool = isinstance(value, bool) and bool not in allowed
        if bad_bool or not isinstance(value, allowed):
            names = " or ".join("None" if t is NoneType else t.__name__ for t in allowed)
            raise StrategyParamError(
                f"{strategy.__name__} parameter {name!r} must be {names}, got "
                f"{type(value).__name__} {value!r}"
            )


@dataclass(frozen=True)
class BacktraderEngine:
    """Runs any backtrader strategy class on a DataFrame of candles.

    Attributes:
        initial_cash: starting cash.
        commission: fraction of traded value charged on every fill (buy and sell).
        slippage: fraction by which every fill is worse than the open it executes at (buys
            higher, sells lower), capped to the bar's high/low.
        allow_short: let sells open short positions; by default the account is long/flat.
        interval: bar interval ("1h", "1d") for annualising; inferred from the index if None.
    """

    initial_cash: float = 10_000.0
    commission: float = 0.001
    slippage: float = 0.0005
    allow_short: bool = False
    interval: str | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.initial_cash) and self.initial_cash > 0):
            raise ValueError(f"initial_cash must be positive, got {self.initial_cash}")
        for name in ("commission", "slippage"):
            value = getattr(self, name)
            if not 0 <= value < 0.5:
                raise ValueError(f"{name} is a fraction of traded value in [0, 0.5), got {value}")

    def run_backtest(
        self, data: pd.DataFrame, strategy: type, strategy_params: dict | None = None
    ) -> BacktestResult:
        """Backtest `strategy` on `data` and compare it with buy-and-hold on the same bars.

        Args:
            data: candles with a DatetimeIndex and open, high, low, close, volume columns.
            strategy: a backtrader Strategy class.
            strategy_params: keyword parameters for the strategy.

        Raises:
            DataValidationError: missing columns or broken candles.
            ValueError: fewer than 3 bars.
            StrategyParamError: unknown or wrongly typed strategy parameter.
            LookAheadError: the strategy read a bar after the current one.

        Example, with the guide's `historical_data` made from the bundled candles::

            from training.data import load_data
            historical_data = load_data("BTC/USDT", interval="1h", days_back=30, data_path="sample")
            results = BacktraderEngine().run_backtest(
                data=historical_data,
                strategy=MLBacktraderStrategy,
                strategy_params={"model_name": "lstm_price_forecast", "model_version": "latest"},
            )
            results["total_return_pct"], results["metrics"]["sharpe_ratio"]
        """
        params = dict(strategy_params or {})
        check_strategy_params(strategy, params)
        return self.run_validated(validate_ohlcv(data, source="backtest data"), strategy, params)

    def run_validated(self, candles: pd.DataFrame, strategy: type, params: dict) -> BacktestResult:
        """`run_backtest` on candles that already passed `validate_ohlcv` and parameters that
        passed `check_strategy_params` (walk-forward checks its data and parameters once)."""
        if len(candles) < 3:
            raise ValueError(f"backtest data has {len(candles)} bars; need at least 3")
        per_year = (
            bars_per_year(self.interval) if self.interval else bars_per_year_of(candles.index)
        )

        cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False, maxcpus=1)
        cerebro.broker = RealisticBroker(allow_short=self.allow_short)
        cerebro.broker.setcash(self.initial_cash)
        cerebro.broker.addcommissioninfo(FractionalCommission(commission=self.commission))
        cerebro.broker.set_slippage_perc(
            self.slippage, slip_open=True, slip_limit=True, slip_match=True, slip_out=False
        )
        cerebro.adddata(CandleFeed(candles))
        cerebro.addstrategy(strategy, **params)
        cerebro.addanalyzer(_Recorder, _name="recorder")
        try:
            (strat,) = cerebro.run()
        except IndexError as exc:
            raise LookAheadError(
                f"{strategy.__name__} indexed a bar that is not available at decision time "
                "(e.g. data.close[1] is the next bar; the engine feeds bars one at a time): "
                f"{exc}"
            ) from exc
        rec = strat.analyzers.recorder
        return self._result(candles, rec, per_year)

    def _result(self, candles: pd.DataFrame, rec, per_year: float) -> BacktestResult:
        index = candles.index
        last_close = float(candles["close"].iloc[-1])
        equity = np.asarray(rec.value, dtype=np.float64)
        position = np.asarray(rec.position, dtype=np.float64)
        trades = trades_from_fills(rec.fills, index, last_close)
        bench_equity, bench_fills = buy_and_hold(
            candles, self.initial_cash, self.commission, self.slippage
        )
        in_bench = np.arange(len(index)) >= 1
        metrics = performance_metrics(equity, trades, position != 0, per_year)
        benchmark = performance_metrics(
            bench_equity, trades_from_fills(bench_fills, index, last_close), in_bench, per_year
        )
        curve = pd.DataFrame(
            {
                "equity": equity,
                "cash": rec.cash,
                "position": position,
                "benchmark_equity": bench_equity,
            },
            index=index,
        )
        fills = [{"time": index[f["bar"]], **f} for f in rec.fills]
        return BacktestResult(
            total_return_pct=metrics["total_return_pct"],
            final_value=float(equity[-1]),
            metrics=metrics,
            benchmark=benchmark,
            equity_curve=curve,
            trades=trades,
            fills=fills,
            rejected_orders=rec.rejected,
            settings=asdict(self),
        )


__all__ = [
    "BacktestResult",
    "BacktraderEngine",
    "CandleFeed",
    "LookAheadError",
    "StrategyParamError",
    "check_strategy_params",
]
