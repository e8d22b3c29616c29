"""The hybrid signal: one price forecast blended with a symbol's news sentiment.

The rule (used by the HTTP API, `SentimentMLStrategy` and the backtest strategy alike):

1. ml_score = clip(r / h, -1, 1), where r is the forecast's simple return and h the half-width
   of its calibrated interval as a return, h = (upper - lower) / (2 * last_close). The forecast
   counts fully (+-1) once the whole interval lies on one side of the last close; a wide,
   uncertain interval shrinks it towards 0.
2. Sentiment counts in proportion to how sure it is: w_s' = sentiment_weight * sentiment_conf.
3. combined = (ml_weight * ml_score + w_s' * sentiment_score) / (ml_weight + w_s'). The weights
   actually used are ml_weight and w_s' normalised to sum to 1; with no news (confidence 0) the
   signal is the forecast alone.
4. confidence = |combined|; signal = BUY if combined > 0, SELL if < 0, but HOLD whenever
   confidence < min_confidence.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

BUY, SELL, HOLD = "BUY", "SELL", "HOLD"


@dataclass(frozen=True)
class HybridWeights:
    """How the two sources are blended and when to act.

    Attributes:
        sentiment_weight: weight of news sentiment at full sentiment confidence.
        ml_weight: weight of the price forecast.
        min_confidence: below this |combined score| the signal is HOLD.
    """

    sentiment_weight: float = 0.3
    ml_weight: float = 0.7
    min_confidence: float = 0.6

    def __post_init__(self) -> None:
        for name in ("sentiment_weight", "ml_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.sentiment_weight + self.ml_weight <= 0:
            raise ValueError("sentiment_weight + ml_weight must be > 0")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence!r}")


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


def ml_score(predicted_return: float, lower: float, upper: float, prediction: float) -> float:
    """The forecast's direction scaled by its uncertainty, in [-1, 1] (rule step 1).

    Args:
        predicted_return: forecast simple return from the last close.
        lower: lower end of the calibrated interval on the next close.
        upper: upper end of that interval.
        prediction: forecast next close (last_close = prediction / (1 + predicted_return)).
    """
    r = _finite("predicted_return", predicted_return)
    lo, hi, pred = (
        _finite(n, v) for n, v in (("lower", lower), ("upper", upper), ("prediction", prediction))
    )
    if r <= -1 or pred <= 0:
        raise ValueError(f"prediction {pred} and predicted_return {r} imply no positive last close")
    if hi <= lo:
        raise ValueError(f"interval upper {hi} must be above lower {lo}")
    half_width = (hi - lo) / (2.0 * pred / (1.0 + r))
    return max(-1.0, min(1.0, r / half_width))


def combine_signal(
    predicted_return: float,
    lower: float,
    upper: float,
    prediction: float,
    sentiment_score: float,
    sentiment_confidence: float,
    weights: HybridWeights | None = None,
) -> dict:
    """Blend one forecast with news sentiment into BUY/SELL/HOLD (the module's rule).

    Args:
        predicted_return, lower, upper, prediction: one row of `Forecaster.predict`.
        sentiment_score: aggregate sentiment in [-1, 1] (0 when there is no news).
        sentiment_confidence: its confidence in [0, 1] (0 when there is no news).
        weights: the blend; default HybridWeights().

    Returns:
        signal, confidence, combined_score, price_prediction, predicted_return, ml_score,
        sentiment_score, sentiment_confidence, weights {"ml", "sentiment"} (as used, summing
        to 1) and the configured weights {"ml_weight", "sentiment_weight", "min_confidence"}.
    """
    weights = weights or HybridWeights()
    s_score = _finite("sentiment_score", sentiment_score)
    s_conf = _finite("sentiment_confidence", sentiment_confidence)
    if not -1.0 <= s_score <= 1.0:
        raise ValueError(f"sentiment_score must be in [-1, 1], got {s_score}")
    if not 0.0 <= s_conf <= 1.0:
        raise ValueError(f"sentiment_confidence must be in [0, 1], got {s_conf}")
    m_score = ml_score(predicted_return, lower, upper, prediction)
    w_sent = weights.sentiment_weight * s_conf
    total = weights.ml_weight + w_sent
    if total <= 0:  # ml_weight 0 and no usable sentiment: nothing to act on
        combined, w_ml_used, w_sent_used = 0.0, 0.0, 0.0
    else:
        w_ml_used, w_sent_used = weights.ml_weight / total, w_sent / total
        combined = w_ml_used * m_score + w_sent_used * s_score
    confidence = abs(combined)
    if confidence < weights.min_confidence or combined == 0:
        signal = HOLD
    else:
        signal = BUY if combined > 0 else SELL
    return {
        "signal": signal,
        "confidence": confidence,
        "combined_score": combined,
        "price_prediction": float(prediction),
        "predicted_return": float(predicted_return),
        "ml_score": m_score,
        "sentiment_score": s_score,
        "sentiment_confidence": s_conf,
        "weights": {"ml": w_ml_used, "sentiment": w_sent_used},
        "configured_weights": asdict(weights),
    }
