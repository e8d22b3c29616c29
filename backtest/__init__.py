"""Backtests of forecasting strategies on backtrader, and walk-forward analysis on Ray."""

from backtest.engine import BacktestResult, BacktraderEngine, LookAheadError, StrategyParamError
from backtest.strategies import MLBacktraderStrategy, NotEnoughBarsError, NoTradeStrategy
from backtest.walk_forward import WalkForwardAnalyzer, WalkForwardResult
from backtest.windows import WalkForwardError

__all__ = [
    "BacktestResult",
    "BacktraderEngine",
    "LookAheadError",
    "MLBacktraderStrategy",
    "NoTradeStrategy",
    "NotEnoughBarsError",
    "StrategyParamError",
    "WalkForwardAnalyzer",
    "WalkForwardError",
    "WalkForwardResult",
]
