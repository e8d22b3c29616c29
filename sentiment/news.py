"""Where headlines come from: the request itself, a file of timestamped headlines per symbol
(CSV or JSONL), or an HTTP news API (CryptoPanic or NewsAPI style) used only when its token
environment variable is set. Every source yields `Headline`s; nothing here scores them."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

MAX_HEADLINES = 200  # per request or per aggregate; more is refused, not truncated
MAX_TEXT_CHARS = 1000  # per headline
NEWS_TOKEN_ENV = "MLTRADE_NEWS_API_TOKEN"


class NewsInputError(ValueError):
    """A headline, a list of headlines or a news file is unusable; the message says where."""


class NewsSourceError(RuntimeError):
    """A news API could not be reached or answered nonsense (timeouts are bounded)."""


@dataclass(frozen=True)
class Headline:
    """One headline; published_at is a UTC timestamp or None (taken as 'now')."""

    title: str
    published_at: pd.Timestamp | None = None
    source: str = "request"


def base_asset(symbol: str) -> str:
    """'BTC/USDT', 'BTCUSDT', 'btc' -> 'BTC' (the asset news is about)."""
    sym = symbol.strip().upper()
    if "/" in sym:
        return sym.split("/")[0]
    for quote in ("USDT", "USDC", "BUSD", "USD", "EUR", "BTC"):
        if sym.endswith(quote) and len(sym) > len(quote):
            return sym[: -len(quote)]
    return sym


def parse_time(value, where: str) -> pd.Timestamp | None:
    """ISO 8601 (or anything pandas reads) -> UTC Timestamp; naive times are UTC."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise NewsInputError(f"{where}: unreadable published_at {value!r} ({exc})") from None
    if pd.isna(ts):
        return None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def check_title(title, where: str) -> str:
    """A non-empty string of at most MAX_TEXT_CHARS characters, stripped."""
    if not isinstance(title, str):
        raise NewsInputError(f"{where}: a headline must be a string, got {type(title).__name__}")
    text = title.strip()
    if not text:
        raise NewsInputError(f"{where}: empty headline")
    if len(text) > MAX_TEXT_CHARS:
        raise NewsInputError(
            f"{where}: headline of {len(text)} characters; the limit is {MAX_TEXT_CHARS}"
        )
    return text


def parse_headlines(items, source: str = "request") -> list[Headline]:
    """Request headlines (strings or {"title", "published_at"} dicts) -> Headlines.

    Raises:
        NewsInputError: too many items, an empty or oversized title, or a bad time, by index.
    """
    items = list(items)
    if len(items) > MAX_HEADLINES:
        raise NewsInputError(f"{len(items)} headlines; the limit is {MAX_HEADLINES} per request")
    out = []
    for i, item in enumerate(items):
        where = f"headlines[{i}]"
        if isinstance(item, Headline):
            out.append(item)
        elif isinstance(item, dict):
            out.append(
                Headline(
                    check_title(item.get("title"), where),
                    parse_time(item.get("published_at"), where),
                    source,
                )
            )
        else:
            out.append(Headline(check_title(item, where), None, source))
    return out


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _file_rows(path: Path):
    """(line number, dict) for every record of a CSV or JSONL file (optionally gzipped)."""
    jsonl = path.name.removesuffix(".gz").endswith((".jsonl", ".ndjson"))
    with _open_text(path) as fh:
        if jsonl:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise NewsInputError(f"{path}:{line_no}: invalid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise NewsInputError(f"{path}:{line_no}: expected a JSON object")
                yield line_no, row
            return
        reader = csv.DictReader(fh)
        missing = {"published_at", "symbol", "title"} - set(reader.fieldnames or ())
        if missing:
            raise NewsInputError(
                f"{path}:1: header lacks columns {sorted(missing)}; need published_at,symbol,title"
            )
        for row in reader:
            if None in row or None in row.values():
                raise NewsInputError(
                    f"{path}:{reader.line_num}: expected {len(reader.fieldnames)} fields"
                )
            yield reader.line_num, row


def read_news_file(path: str | Path) -> dict[str, list[Headline]]:
    """Load a news file into {base asset: headlines sorted by time}.

    CSV needs columns published_at, symbol, title (source optional); JSONL needs the same keys.
    A `.gz` suffix is read transparently.

    Raises:
        NewsInputError: naming the file and line of the first malformed record.
    """
    path = Path(path)
    if not path.is_file():
        raise NewsInputError(f"news file {path} does not exist")
    by_asset: dict[str, list[Headline]] = {}
    for line_no, row in _file_rows(path):
        where = f"{path}:{line_no}"
        symbol = row.get("symbol")
        if not isinstance(symbol, str) or not symbol.strip():
            raise NewsInputError(f"{where}: missing symbol")
        published = parse_time(row.get("published_at"), where)
        if published is None:
            raise NewsInputError(f"{where}: missing published_at")
        headline = Headline(
            check_title(row.get("title"), where), published, str(row.get("source") or path.name)
        )
        by_asset.setdefault(base_asset(symbol), []).append(headline)
    for headlines in by_asset.values():
        headlines.sort(key=lambda h: h.published_at)
    return by_asset


@dataclass(frozen=True)
class NewsApiConfig:
    """An HTTP news API. style "cryptopanic": GET {url}?auth_token=..&currencies=BTC ->
    {"results": [{"title", "published_at"}]}; style "newsapi": GET {url}?apiKey=..&q=BTC ->
    {"articles": [{"title", "publishedAt"}]}. Used only when `token_env` is set."""

    url: str = "https://cryptopanic.com/api/v1/posts/"
    style: str = "cryptopanic"
    token_env: str = NEWS_TOKEN_ENV
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.style not in ("cryptopanic", "newsapi"):
            raise ValueError(f"news API style must be cryptopanic or newsapi, got {self.style!r}")
        if not 0 < self.timeout_s <= 60:
            raise ValueError(f"news API timeout_s must be in (0, 60], got {self.timeout_s}")

    @property
    def token(self) -> str | None:
        return os.environ.get(self.token_env) or None


def fetch_api_headlines(symbol: str, config: NewsApiConfig) -> list[Headline]:
    """Recent headlines about a symbol's base asset from the configured API (newest first as the
    API sends them, at most MAX_HEADLINES).

    Raises:
        NewsSourceError: no token, unreachable, timed out, HTTP error or an unexpected body.
    """
    token = config.token
    if token is None:
        raise NewsSourceError(f"news API not configured: set {config.token_env}")
    asset = base_asset(symbol)
    query = (
        {"auth_token": token, "currencies": asset, "public": "true"}
        if config.style == "cryptopanic"
        else {"apiKey": token, "q": asset}
    )
    url = f"{config.url}?{urllib.parse.urlencode(query)}"
    safe_url = config.url  # never echo the token
    try:
        with urllib.request.urlopen(url, timeout=config.timeout_s) as resp:
            body = json.loads(resp.read(4 << 20))
    except urllib.error.HTTPError as exc:
        raise NewsSourceError(f"news API {safe_url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NewsSourceError(
            f"news API {safe_url} unreachable within {config.timeout_s}s: {reason}"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NewsSourceError(f"news API {safe_url} sent a body that is not JSON: {exc}") from None
    key, time_key = (
        ("results", "published_at")
        if config.style == "cryptopanic"
        else ("articles", "publishedAt")
    )
    items = body.get(key) if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise NewsSourceError(f"news API {safe_url} response has no {key!r} list")
    out = []
    for i, item in enumerate(items[:MAX_HEADLINES]):
        where = f"news API {key}[{i}]"
        try:
            out.append(
                Headline(
                    check_title(item.get("title"), where),
                    parse_time(item.get(time_key), where),
                    f"api:{config.style}",
                )
            )
        except (NewsInputError, AttributeError) as exc:
            raise NewsSourceError(f"news API {safe_url}: {exc}") from None
    return out
