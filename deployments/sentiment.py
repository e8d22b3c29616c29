"""The news sentiment deployment: its own replicas (and a GPU share where the cluster has GPUs)
scoring headlines with the registered `news_sentiment` model, concurrent requests batched into
one forward pass, and a symbol's aggregate from request headlines or the configured sources."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from transformers.utils import logging as hf_logging

from deployments.messages import SentimentUnavailableError
from deployments.replica import configure_tracking, use_assigned_cpus
from deployments.schemas import MAX_DROPPED_LISTED
from deployments.settings import VersionSpec
from sentiment.aggregate import AggregateSettings, dropped_headlines, in_window
from sentiment.model import DEFAULT_MODEL_NAME, SentimentAnalyzer
from sentiment.news import MAX_HEADLINES, NewsApiConfig, NewsInputError, check_title
from sentiment.sources import NewsFileCache, NewsSettings, find_headlines, report
from training.registry import ModelNotFoundError

log = logging.getLogger("ray.serve")


class ScorerSettings(BaseModel):
    """The scorer's user_config: which model, where news comes from, how it is aggregated."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_name: str = DEFAULT_MODEL_NAME
    model_version: VersionSpec = Field("latest", description="'latest', a number or an alias")
    news_file: str | None = Field(
        None, description="CSV/JSONL headlines; default $MLTRADE_NEWS_FILE"
    )
    news_api_url: str = NewsApiConfig.url
    news_api_style: str = Field(NewsApiConfig.style, pattern="^(cryptopanic|newsapi)$")
    news_api_token_env: str = NewsApiConfig.token_env
    news_api_timeout_s: float = Field(NewsApiConfig.timeout_s, gt=0, le=60)
    half_life_hours: float = Field(AggregateSettings.half_life_hours, gt=0)
    max_age_hours: float = Field(AggregateSettings.max_age_hours, gt=0)
    evidence_k: float = Field(AggregateSettings.evidence_k, ge=0)
    max_batch_size: int = Field(32, ge=1, le=256, description="Requests per forward pass")
    score_cache_size: int = Field(
        4096, ge=0, description="Scored headlines remembered (news sources repeat them)"
    )
    batch_wait_timeout_s: float = Field(
        0.0, ge=0, le=1, description="How long a batch waits to fill; 0 batches what queued"
    )

    def news(self) -> NewsSettings:
        return NewsSettings(
            news_file=self.news_file,
            api=NewsApiConfig(
                self.news_api_url,
                self.news_api_style,
                self.news_api_token_env,
                self.news_api_timeout_s,
            ),
            aggregate=AggregateSettings(self.half_life_hours, self.max_age_hours, self.evidence_k),
        )


@serve.deployment(name="SentimentScorer", max_ongoing_requests=64)
class SentimentScorer:
    """Scores headlines and aggregates a symbol's news sentiment.

    Args:
        tracking_uri: MLflow tracking URI of the registry (None: MLFLOW_TRACKING_URI or the
            project's SQLite store).
        settings: ScorerSettings fields; later changes arrive through `reconfigure`.
    """

    def __init__(self, tracking_uri: str | None = None, settings: dict | None = None) -> None:
        configure_tracking(tracking_uri)
        use_assigned_cpus()
        # The replica's output ends up in `mltrade serve`'s terminal and the logs: no
        # "Loading weights" progress bar there at every start
        hf_logging.disable_progress_bar()
        self.settings: ScorerSettings | None = None
        self.analyzer: SentimentAnalyzer | None = None
        self.files = NewsFileCache()
        self.cache: OrderedDict[str, dict] = OrderedDict()
        self.reconfigure(settings or {})

    def reconfigure(self, config: dict) -> None:
        """Apply a user_config; the model reloads only when its name or version changed."""
        new = ScorerSettings.model_validate(config or {})
        old = self.settings
        self._score_batch.set_max_batch_size(new.max_batch_size)
        self._score_batch.set_batch_wait_timeout_s(new.batch_wait_timeout_s)
        self.settings = new
        self.news = new.news()
        if old is None or (old.model_name, old.model_version) != (
            new.model_name,
            new.model_version,
        ):
            self.analyzer = None
            self.cache.clear()
            try:
                self._load()
            except SentimentUnavailableError as exc:  # the replica starts; requests say why
                log.warning("%s", exc)

    def _load(self) -> SentimentAnalyzer:
        """The analyzer, loading it from the registry if it is not loaded yet.

        Raises:
            SentimentUnavailableError: no such model, version or alias is registered.
        """
        if self.analyzer is None:
            name, version = self.settings.model_name, self.settings.model_version
            try:
                self.analyzer = SentimentAnalyzer.from_registry(name, version)
            except ModelNotFoundError as exc:
                raise SentimentUnavailableError(
                    f"the sentiment scorer has no model: {exc}; train and register it with "
                    "`mltrade sentiment train` or `python -m sentiment.train` (`make run` does "
                    "it when it is missing), or serve without sentiment (with_sentiment: false)"
                ) from None
            log.info("sentiment model %s on %s", self.analyzer.source, self.analyzer.device)
        return self.analyzer

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def _score_batch(self, text_lists: list[list[str]]) -> list[list[dict]]:
        flat = [text for texts in text_lists for text in texts]
        analyzer = self.analyzer or await asyncio.to_thread(self._load)
        analyses = await asyncio.to_thread(analyzer.analyze, flat)
        out, start = [], 0
        for texts in text_lists:
            out.append(analyses[start : start + len(texts)])
            start += len(texts)
        return out

    async def _analyses(self, texts: list[str]) -> list[dict]:
        """Scores of checked texts: cached ones from memory, the rest in one batched call."""
        known = {t: self.cache[t] for t in texts if t in self.cache}
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            known.update(zip(missing, await self._score_batch(missing), strict=True))
        for text in texts:  # no await from here on: other calls cannot interleave
            self.cache[text] = known[text]
            self.cache.move_to_end(text)
        while len(self.cache) > self.settings.score_cache_size:
            self.cache.popitem(last=False)
        return [known[t] for t in texts]

    async def score(self, texts: list[str]) -> list[dict]:
        """Per text: label, score in [-1, 1], confidence, probabilities (batched across calls).

        Raises:
            NewsInputError: more than MAX_HEADLINES texts, or an empty or oversized one.
            SentimentUnavailableError: no sentiment model is registered.
        """
        if len(texts) > MAX_HEADLINES:
            raise NewsInputError(f"{len(texts)} texts; the limit is {MAX_HEADLINES} per call")
        # Checked here so one bad text fails its own call, not the whole batch.
        checked = [check_title(t, f"texts[{i}]") for i, t in enumerate(texts)]
        return await self._analyses(checked) if checked else []

    async def aggregate(self, symbol: str, headlines: list | None = None) -> dict:
        """A symbol's sentiment now: score, confidence, n_headlines, source, as_of, dropped (what
        the window left out and why; see `dropped_headlines`), and a note when there is one.

        Args:
            symbol: e.g. "BTC/USDT"; news sources match its base asset.
            headlines: strings or {"title", "published_at"} dicts; None uses the news API (when
                its token is set) or the news file; [] means no news.

        Raises:
            NewsInputError: bad request headlines or a malformed news file (naming the line).
            SentimentUnavailableError: there are headlines to score but no sentiment model.
        """
        news = self.news
        found = await asyncio.to_thread(find_headlines, symbol, headlines, news, self.files)
        as_of = pd.Timestamp.now(tz="UTC")
        kept, ages = in_window(found.headlines, as_of, news.aggregate)
        analyses = await self._analyses([h.title for h in kept]) if kept else []
        answer = report(found, analyses, ages, news.aggregate, as_of)
        answer["dropped"] = dropped_headlines(
            found.headlines, as_of, news.aggregate, MAX_DROPPED_LISTED
        )
        return answer

    async def health(self) -> dict:
        if self.analyzer is None:
            return {"model": None, "device": None}
        return {"model": self.analyzer.source, "device": str(self.analyzer.device)}
