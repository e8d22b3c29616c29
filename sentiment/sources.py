"""Which headlines a symbol's sentiment is built from, in order of preference:

1. headlines passed with the request (an empty list means "no news", not "look elsewhere");
2. the HTTP news API, when its token environment variable is set;
3. the configured news file (also the fallback when the API fails; the note says so);
4. nothing: the answer is neutral with zero confidence, and says why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sentiment.aggregate import AggregateSettings, in_window, summarize
from sentiment.news import (
    Headline,
    NewsApiConfig,
    NewsSourceError,
    base_asset,
    fetch_api_headlines,
    parse_headlines,
    read_news_file,
)

NEWS_FILE_ENV = "MLTRADE_NEWS_FILE"


@dataclass(frozen=True)
class NewsSettings:
    """Where headlines come from and how they are aggregated.

    Attributes:
        news_file: CSV/JSONL of timestamped headlines per symbol; default $MLTRADE_NEWS_FILE.
        api: the news API (used only when its token variable is set); None disables it.
        aggregate: half-life, window and evidence constant.
    """

    news_file: str | None = None
    api: NewsApiConfig | None = field(default_factory=NewsApiConfig)
    aggregate: AggregateSettings = field(default_factory=AggregateSettings)

    @property
    def resolved_news_file(self) -> str | None:
        return self.news_file or os.environ.get(NEWS_FILE_ENV) or None


@dataclass(frozen=True)
class Found:
    """Headlines for a symbol, where they came from, and any note on fallbacks."""

    headlines: list[Headline]
    source: str
    note: str | None = None


class NewsFileCache:
    """Reads a news file once and again only when it changes on disk."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._by_asset: dict[str, list[Headline]] = {}

    def get(self, path: str) -> dict[str, list[Headline]]:
        stat = Path(path).stat() if Path(path).is_file() else None
        key = (path, stat.st_mtime_ns if stat else None, stat.st_size if stat else None)
        if key != self._key:
            self._by_asset = read_news_file(path)  # NewsInputError names a bad line
            self._key = key
        return self._by_asset


def find_headlines(symbol: str, headlines, settings: NewsSettings, files: NewsFileCache) -> Found:
    """Headlines for `symbol` from the request, the API, the file, or none (module order).

    Raises:
        NewsInputError: bad request headlines or a malformed news file (naming the line).
    """
    if headlines is not None:
        return Found(parse_headlines(headlines), "request")
    note = None
    if settings.api is not None and settings.api.token is not None:
        try:
            return Found(fetch_api_headlines(symbol, settings.api), f"api:{settings.api.style}")
        except NewsSourceError as exc:
            note = f"{exc}; fell back to the news file" if settings.resolved_news_file else str(exc)
    path = settings.resolved_news_file
    if path:
        found = files.get(path).get(base_asset(symbol), [])
        return Found(found, f"file:{Path(path).name}", note)
    return Found(
        [],
        "none",
        note
        or f"no headlines given and no news source configured for "
        f"{symbol} (set {NEWS_FILE_ENV} or the news API token)",
    )


def report(
    found: Found, analyses: list[dict], ages_hours, settings: AggregateSettings, as_of: pd.Timestamp
) -> dict:
    """The aggregate of the scored in-window headlines, with the source's note appended."""
    out = summarize(analyses, ages_hours, settings, found.source, as_of, len(found.headlines))
    if found.note:
        out["note"] = f"{found.note}; {out['note']}" if "note" in out else found.note
    return out


def symbol_sentiment(
    found: Found, analyze, settings: AggregateSettings, as_of: pd.Timestamp | None = None
) -> dict:
    """Score the in-window headlines with `analyze` and aggregate them.

    Args:
        found: from `find_headlines`.
        analyze: a function texts -> analyses (`SentimentAnalyzer.analyze`).
        settings: the aggregate's knobs.
        as_of: the time the sentiment is for (default now, UTC).

    Returns:
        score, confidence, n_headlines, source, as_of (and note when there is one).
    """
    as_of = as_of or pd.Timestamp.now(tz="UTC")
    kept, ages = in_window(found.headlines, as_of, settings)
    analyses = analyze([h.title for h in kept]) if kept else []
    return report(found, analyses, ages, settings, as_of)
