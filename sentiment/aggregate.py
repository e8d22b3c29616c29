"""A symbol's sentiment from its recent headlines: probability-weighted and recency-weighted.

For headlines i published at or before `as_of` and at most `max_age_hours` old, with model
score s_i = P(positive) - P(negative), model confidence c_i = max class probability and age a_i:

    r_i = 0.5 ** (a_i / half_life_hours)             recency weight
    w_i = r_i * c_i                                  probability (confidence) weight
    score = sum(w_i * s_i) / sum(w_i)                in [-1, 1]
    confidence = sum(w_i) / (sum(r_i) + evidence_k)  in [0, 1)

so confidence is the recency-weighted mean model confidence shrunk by how little fresh news
there is (one fresh headline counts 1 / (1 + evidence_k)). No headlines -> score 0 with
confidence 0 and a note saying so. Headlines without a time count as published at `as_of`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sentiment.news import Headline


@dataclass(frozen=True)
class AggregateSettings:
    """Knobs of the aggregate (see the module docstring)."""

    half_life_hours: float = 24.0
    max_age_hours: float = 72.0
    evidence_k: float = 2.0

    def __post_init__(self) -> None:
        if not self.half_life_hours > 0:
            raise ValueError(f"half_life_hours must be > 0, got {self.half_life_hours}")
        if not self.max_age_hours > 0:
            raise ValueError(f"max_age_hours must be > 0, got {self.max_age_hours}")
        if not self.evidence_k >= 0:
            raise ValueError(f"evidence_k must be >= 0, got {self.evidence_k}")


def aggregate_scores(
    scores: np.ndarray,
    confidences: np.ndarray,
    ages_hours: np.ndarray,
    settings: AggregateSettings,
) -> tuple[float, float, int]:
    """The formula on arrays of headlines already filtered to the window.

    Returns:
        (score, confidence, number of headlines).
    """
    scores, confidences, ages = (
        np.asarray(a, dtype=np.float64) for a in (scores, confidences, ages_hours)
    )
    if len(scores) == 0:
        return 0.0, 0.0, 0
    recency = 0.5 ** (ages / settings.half_life_hours)
    weight = recency * confidences
    total = float(weight.sum())
    score = float((weight * scores).sum() / total) if total > 0 else 0.0
    confidence = total / (float(recency.sum()) + settings.evidence_k)
    return score, confidence, len(scores)


def neutral(source: str, note: str) -> dict:
    """The stated no-news answer: neutral score with zero confidence."""
    return {"score": 0.0, "confidence": 0.0, "n_headlines": 0, "source": source, "note": note}


def _ages_hours(headlines: list[Headline], as_of: pd.Timestamp) -> np.ndarray:
    """Hours from each headline's publication to as_of (undated: 0, i.e. published at as_of)."""
    return np.array(
        [
            0.0 if h.published_at is None else (as_of - h.published_at).total_seconds() / 3600.0
            for h in headlines
        ],
        dtype=np.float64,
    )


def in_window(
    headlines: list[Headline], as_of: pd.Timestamp, settings: AggregateSettings
) -> tuple[list[Headline], np.ndarray]:
    """The headlines published in [as_of - max_age_hours, as_of] and their ages in hours; later
    ones are dropped (no look-ahead), so only these need scoring."""
    ages = _ages_hours(headlines, as_of)
    keep = np.flatnonzero((ages >= 0) & (ages <= settings.max_age_hours))
    return [headlines[i] for i in keep], ages[keep]


def dropped_headlines(
    headlines: list[Headline],
    as_of: pd.Timestamp,
    settings: AggregateSettings,
    limit: int,
) -> dict:
    """What `in_window` leaves out and why, at most `limit` of them by name (for an answer).

    Returns:
        {"too_old": count published more than max_age_hours before as_of, "after_as_of":
        count published after it, "headlines": the `limit` of them nearest the window, newest
        first, each {"title", "published_at", "reason"}}.
    """
    ages = _ages_hours(headlines, as_of)
    after = np.flatnonzero(ages < 0)
    too_old = np.flatnonzero(ages > settings.max_age_hours)
    old_reason = f"older than the {settings.max_age_hours:g} h window before as_of"
    nearest = [
        *((i, "published after as_of") for i in after[np.argsort(-ages[after])]),
        *((i, old_reason) for i in too_old[np.argsort(ages[too_old])]),
    ]
    listed = sorted(nearest[:limit], key=lambda item: ages[item[0]])  # newest first
    return {
        "too_old": int(len(too_old)),
        "after_as_of": int(len(after)),
        "headlines": [
            {
                "title": headlines[i].title,
                "published_at": headlines[i].published_at.isoformat(),
                "reason": reason,
            }
            for i, reason in listed
        ],
    }


def summarize(
    analyses: list[dict],
    ages_hours: np.ndarray,
    settings: AggregateSettings,
    source: str,
    as_of: pd.Timestamp,
    n_offered: int,
) -> dict:
    """The aggregate of scored in-window headlines, or the stated neutral answer.

    Args:
        analyses: `SentimentAnalyzer.analyze` output for the in-window headlines.
        ages_hours: their ages, same order.
        settings: half-life, window and evidence constant.
        source: where the headlines came from (reported back).
        as_of: the time the sentiment is for.
        n_offered: headlines the source offered before the window filter (for the note).

    Returns:
        score, confidence, n_headlines, source, as_of, plus a note when nothing was usable.
    """
    if not analyses:
        note = (
            f"no headlines in the {settings.max_age_hours:g}h before {as_of.isoformat()} "
            f"({n_offered} outside that window)"
            if n_offered
            else "no headlines"
        )
        return {**neutral(source, note), "as_of": as_of.isoformat()}
    score, confidence, n = aggregate_scores(
        np.array([a["score"] for a in analyses]),
        np.array([a["confidence"] for a in analyses]),
        ages_hours,
        settings,
    )
    return {
        "score": score,
        "confidence": confidence,
        "n_headlines": n,
        "source": source,
        "as_of": as_of.isoformat(),
    }


def sentiment_series(
    close_times: pd.DatetimeIndex,
    published: pd.DatetimeIndex,
    scores: np.ndarray,
    confidences: np.ndarray,
    settings: AggregateSettings,
) -> pd.DataFrame:
    """Sentiment at each bar close using only headlines published strictly before it.

    Args:
        close_times: UTC times the bars close, ascending.
        published: UTC publication times of the scored headlines.
        scores, confidences: per headline, from `SentimentAnalyzer.analyze`.
        settings: half-life, window and evidence constant.

    Returns:
        DataFrame indexed by close_times with score, confidence, n_headlines.
    """
    published, close_times = published.as_unit("ns"), close_times.as_unit("ns")
    order = np.argsort(published.asi8, kind="stable")
    pub_ns = published.asi8[order]
    scores = np.asarray(scores, dtype=np.float64)[order]
    confidences = np.asarray(confidences, dtype=np.float64)[order]
    close_ns = close_times.asi8  # pandas may hold s or us; both were set to ns above
    window_ns = int(settings.max_age_hours * 3600e9)
    hi = np.searchsorted(pub_ns, close_ns, side="left")  # published < close
    lo = np.searchsorted(pub_ns, close_ns - window_ns, side="left")
    rows = np.zeros((len(close_ns), 3))
    for i, (a, b) in enumerate(zip(lo, hi, strict=True)):
        if b > a:
            ages = (close_ns[i] - pub_ns[a:b]) / 3600e9
            rows[i] = aggregate_scores(scores[a:b], confidences[a:b], ages, settings)
    frame = pd.DataFrame(rows, index=close_times, columns=["score", "confidence", "n_headlines"])
    return frame.astype({"n_headlines": int})
