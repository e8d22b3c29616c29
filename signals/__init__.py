"""Trading signals from forecasts: the forecast-confidence rule and the hybrid forecast + news
sentiment rule, in one place (see `signals.rules`). NumPy only, so Serve replicas can import it."""

from signals.rules import (
    BUY,
    HOLD,
    SELL,
    HybridWeights,
    blend,
    combine_signal,
    directional_confidence,
    forecast_score,
    hybrid_series,
    ml_score,
    signal_labels,
)

__all__ = [
    "BUY",
    "HOLD",
    "SELL",
    "HybridWeights",
    "blend",
    "combine_signal",
    "directional_confidence",
    "forecast_score",
    "hybrid_series",
    "ml_score",
    "signal_labels",
]
