"""Backtests of forecasting strategies on backtrader, and walk-forward analysis on Ray.

The hybrid forecast + sentiment strategy is `backtest.hybrid_strategy.HybridBacktraderStrategy`
(not imported here: it loads the sentiment model's dependencies).
"""

from backtest.engine import BacktraderEngine, LookAheadError, StrategyParamError
from backtest.results import BacktestResult, WalkForwardResult
from backtest.strategies import MLBacktraderStrategy, NotEnoughBarsError, NoTradeStrategy
from backtest.walk_forward import WalkForwardAnalyzer
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
