"""How sure a price forecast is, and the hybrid rule that blends it with news sentiment.

One rule for the HTTP API, `sentiment.SentimentMLStrategy`, the backtrader strategies and the
backtests. NumPy only (Serve replicas import it): no backtrader, torch or MLflow here.

How sure is a forecast
----------------------
A forecast of the next bar's simple return r comes with a calibrated interval [lo, hi] (as
returns from the last close) that covers the outcome with the model's confidence (e.g. 90%).

- `directional_confidence` is the share of that interval lying on the forecast's side of zero,
  in [0, 1]: 1 when the whole interval agrees with the forecast's direction, 0.5 for a forecast
  of zero. A forecast of +0.2% with interval [-1%, +1.4%] has 1.4 / 2.4 = 0.58 of its interval
  above zero: 0.58. For the same forecast a wider interval means lower confidence.
- `forecast_score` is the same number signed and rescaled to [-1, 1]: sign(r) * (2c - 1), how
  much more of the interval agrees with the forecast than disagrees. For an interval symmetric
  about the forecast (r +- h) it equals clip(r / h, -1, 1): the forecast counts fully once the
  whole interval lies on one side of the last close.

The platform used to have two rules (the share above for strategies, clip(r / h) for hybrid
signals). They agree on symmetric intervals; the share is kept because it reads the interval as
it is (the Forecaster's intervals are symmetric in log returns, hence slightly skewed as simple
returns) instead of assuming it is centred on the forecast.

The hybrid rule
---------------
1. ml_score = forecast_score(r, lo, hi).
2. Sentiment counts in proportion to how sure it is: w_s' = sentiment_weight * sentiment_conf.
3. combined = (ml_weight * ml_score + w_s' * sentiment_score) / (ml_weight + w_s'). The weights
   actually used are ml_weight and w_s' normalised to sum to 1; with no news (confidence 0) the
   signal is the forecast alone.
4. confidence = |combined|; signal = BUY if combined > 0, SELL if < 0, but HOLD whenever
   confidence < min_confidence (and when combined is 0).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

BUY, SELL, HOLD = "BUY", "SELL", "HOLD"


def directional_confidence(predicted_return, lower_return, upper_return) -> np.ndarray:
    """Share of the calibrated interval on the forecast's side of zero, in [0, 1] (elementwise).

    Args:
        predicted_return: forecast simple return(s) of the next bar.
        lower_return, upper_return: the calibrated interval's ends, as returns from the last
            close. A zero-width interval counts as fully sure; an infinite (or NaN) width as
            knowing nothing (0.5), so no width ever divides by zero or gives NaN.
    """
    r, lo, hi = (
        np.asarray(a, dtype=np.float64) for a in (predicted_return, lower_return, upper_return)
    )
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        width = hi - lo
        agree = np.where(r >= 0, hi - np.maximum(lo, 0.0), np.minimum(hi, 0.0) - lo)
        share = np.where(width > 0, agree / width, 1.0)
    share = np.where(np.isfinite(width), share, 0.5)
    return np.clip(share, 0.0, 1.0)


def forecast_score(predicted_return, lower_return, upper_return) -> np.ndarray:
    """The forecast's direction scaled by how sure it is, in [-1, 1] (elementwise).

    sign(r) * (2 * directional_confidence - 1); 0 for a forecast of exactly zero, NaN where the
    forecast is NaN.
    """
    r = np.asarray(predicted_return, dtype=np.float64)
    confidence = directional_confidence(r, lower_return, upper_return)
    return np.where(np.isnan(r), np.nan, np.sign(r) * (2.0 * confidence - 1.0))


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
    """`forecast_score` of one forecast row given as prices (hybrid rule step 1).

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
    last_close = pred / (1.0 + r)
    return float(forecast_score(r, lo / last_close - 1.0, hi / last_close - 1.0))


def blend(ml_scores, sentiment_scores, sentiment_confidences, weights: HybridWeights):
    """Hybrid rule steps 2-3, elementwise.

    Returns:
        (combined score, ml weight used, sentiment weight used) arrays; a NaN ml score gives a
        combined score of 0 (nothing to act on).
    """
    m = np.asarray(ml_scores, dtype=np.float64)
    s_score = np.asarray(sentiment_scores, dtype=np.float64)
    w_sent = weights.sentiment_weight * np.asarray(sentiment_confidences, dtype=np.float64)
    total = weights.ml_weight + w_sent
    with np.errstate(divide="ignore", invalid="ignore"):
        w_ml_used = np.where(total > 0, weights.ml_weight / total, 0.0)
        w_sent_used = np.where(total > 0, w_sent / total, 0.0)
    combined = w_ml_used * m + w_sent_used * s_score
    return np.where(np.isnan(combined), 0.0, combined), w_ml_used, w_sent_used


def signal_labels(combined, min_confidence: float) -> np.ndarray:
    """Hybrid rule step 4: BUY, SELL or HOLD per combined score."""
    combined = np.asarray(combined, dtype=np.float64)
    direction = np.where(combined > 0, BUY, SELL)
    return np.where((np.abs(combined) < min_confidence) | (combined == 0), HOLD, direction)


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
    combined, w_ml, w_sent = (float(a) for a in blend(m_score, s_score, s_conf, weights))
    return {
        "signal": str(signal_labels(combined, weights.min_confidence)),
        "confidence": abs(combined),
        "combined_score": combined,
        "price_prediction": float(prediction),
        "predicted_return": float(predicted_return),
        "ml_score": m_score,
        "sentiment_score": s_score,
        "sentiment_confidence": s_conf,
        "weights": {"ml": w_ml, "sentiment": w_sent},
        "configured_weights": asdict(weights),
    }


def hybrid_series(
    predicted_return,
    lower_return,
    upper_return,
    sentiment_scores,
    sentiment_confidences,
    weights: HybridWeights,
) -> dict[str, np.ndarray]:
    """The hybrid rule for every bar of a precomputed forecast series (backtests).

    Args:
        predicted_return, lower_return, upper_return: per-bar forecasts as returns from each
            bar's close (NaN where a bar has no forecast: its signal is HOLD).
        sentiment_scores, sentiment_confidences: the per-bar sentiment aggregate.
        weights: the blend.

    Returns:
        Arrays ml_score, combined_score, confidence and signal, one entry per bar.
    """
    m = forecast_score(predicted_return, lower_return, upper_return)
    combined, _, _ = blend(m, sentiment_scores, sentiment_confidences, weights)
    return {
        "ml_score": m,
        "combined_score": combined,
        "confidence": np.abs(combined),
        "signal": signal_labels(combined, weights.min_confidence),
    }
