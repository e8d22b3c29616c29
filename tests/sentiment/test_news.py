"""News sources: request headlines, news files (CSV/JSONL, malformed lines named), the HTTP news
API against a local stub server on 127.0.0.1, and the order sources are tried in."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from sentiment.news import (
    MAX_HEADLINES,
    MAX_TEXT_CHARS,
    NewsApiConfig,
    NewsInputError,
    NewsSourceError,
    base_asset,
    fetch_api_headlines,
    parse_headlines,
    read_news_file,
)
from sentiment.samples import NEWS_FILE
from sentiment.sources import NEWS_FILE_ENV, NewsFileCache, NewsSettings, find_headlines

TOKEN_ENV = "TEST_SENTIMENT_NEWS_TOKEN"


class _Stub(BaseHTTPRequestHandler):
    """Answers like CryptoPanic (/cp), NewsAPI (/na), slowly (/slow), or wrongly."""

    seen: list[dict] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        path, _, query = self.path.partition("?")
        _Stub.seen.append({"path": path, **dict(urllib.parse.parse_qsl(query))})
        if path == "/slow":
            time.sleep(3)
        if path == "/cp":
            body = {
                "results": [
                    {"title": "Bitcoin ETF approved", "published_at": "2024-03-01T10:00:00Z"},
                    {"title": "BTC slides", "published_at": "2024-03-01T09:00:00Z"},
                ]
            }
        elif path == "/na":
            body = {"articles": [{"title": "Ether rallies", "publishedAt": "2024-03-01T08:00:00Z"}]}
        elif path == "/500":
            self.send_error(500)
            return
        else:
            body = None
        payload = b"<html>not json</html>" if body is None else json.dumps(body).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout test)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def stub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "secret-token")


def _api(url: str, style: str = "cryptopanic", timeout_s: float = 2.0) -> NewsApiConfig:
    return NewsApiConfig(url=url, style=style, token_env=TOKEN_ENV, timeout_s=timeout_s)


def test_base_asset():
    assert [base_asset(s) for s in ("BTC/USDT", "ethusdt", "DOGE", "ADAUSD")] == [
        "BTC",
        "ETH",
        "DOGE",
        "ADA",
    ]


def test_request_headlines_strings_and_dicts():
    out = parse_headlines(
        ["  Bitcoin ETF approved ", {"title": "ETH slides", "published_at": "2024-03-01T10:00:00"}]
    )
    assert out[0].title == "Bitcoin ETF approved" and out[0].published_at is None
    assert out[1].published_at == pd.Timestamp("2024-03-01T10:00Z")  # naive is UTC


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["ok", "   "], r"headlines\[1\]: empty headline"),
        (["x" * (MAX_TEXT_CHARS + 1)], rf"headlines\[0\]: headline of {MAX_TEXT_CHARS + 1}"),
        (["a"] * (MAX_HEADLINES + 1), f"the limit is {MAX_HEADLINES}"),
        ([{"title": "ok", "published_at": "yesterday-ish"}], r"headlines\[0\]: unreadable"),
        ([42], r"headlines\[0\]: a headline must be a string"),
    ],
)
def test_bad_request_headlines_are_named(items, message):
    with pytest.raises(NewsInputError, match=message):
        parse_headlines(items)


def test_bundled_news_sample_loads_per_symbol():
    by_asset = read_news_file(NEWS_FILE)
    assert {"BTC", "ETH", "ADA", "DOGE", "DOT"} <= set(by_asset)
    btc = by_asset["BTC"]
    assert len(btc) > 1000
    times = [h.published_at for h in btc]
    assert times == sorted(times) and times[0].tzinfo is not None


def test_csv_and_jsonl_files(tmp_path):
    csv_path = tmp_path / "news.csv.gz"
    with gzip.open(csv_path, "wt") as fh:
        fh.write(
            "published_at,symbol,title\n2024-03-01T10:00:00Z,BTC/USDT,Bitcoin up\n"
            "2024-03-01T09:00:00Z,ETHUSDT,Ether down\n"
        )
    jsonl = tmp_path / "news.jsonl"
    jsonl.write_text(
        '{"published_at": "2024-03-01T10:00:00Z", "symbol": "BTC", "title": "a"}\n'
        "\n"
        '{"published_at": "2024-03-01T08:00:00Z", "symbol": "BTC", "title": "b"}\n'
    )
    assert [h.title for h in read_news_file(csv_path)["ETH"]] == ["Ether down"]
    assert [h.title for h in read_news_file(jsonl)["BTC"]] == ["b", "a"]  # sorted by time


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "bad.jsonl",
            '{"published_at": "2024-03-01", "symbol": "BTC", "title": "a"}\n{oops\n',
            r"bad.jsonl:2: invalid JSON",
        ),
        (
            "bad.csv",
            "published_at,symbol,title\n2024-03-01,BTC,a\n2024-03-02,BTC\n",
            r"bad.csv:3: expected 3 fields",
        ),
        (
            "bad.csv",
            "published_at,symbol,title\n2024-03-01,BTC,a\nnot-a-date,BTC,b\n",
            r"bad.csv:3: unreadable published_at",
        ),
        ("bad.csv", "published_at,symbol,title\n2024-03-01,BTC,\n", r"bad.csv:2: empty headline"),
        ("bad.csv", "when,symbol,title\n", r"bad.csv:1: header lacks columns \['published_at'\]"),
    ],
)
def test_malformed_news_file_names_the_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(NewsInputError, match=message):
        read_news_file(path)


def test_cryptopanic_style_api(stub, token):
    _Stub.seen.clear()
    out = fetch_api_headlines("BTC/USDT", _api(stub + "/cp"))
    assert [h.title for h in out] == ["Bitcoin ETF approved", "BTC slides"]
    assert out[0].published_at == pd.Timestamp("2024-03-01T10:00Z")
    assert out[0].source == "api:cryptopanic"
    assert _Stub.seen[-1] == {
        "path": "/cp",
        "auth_token": "secret-token",
        "currencies": "BTC",
        "public": "true",
    }


def test_newsapi_style_api(stub, token):
    out = fetch_api_headlines("ETH/USDT", _api(stub + "/na", style="newsapi"))
    assert [h.title for h in out] == ["Ether rallies"]
    assert _Stub.seen[-1]["q"] == "ETH" and _Stub.seen[-1]["apiKey"] == "secret-token"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("path", "message"),
    [("/500", "answered HTTP 500"), ("/html", "not JSON"), ("/na", "no 'results' list")],
)
def test_api_errors_are_clear(stub, token, path, message):
    with pytest.raises(NewsSourceError, match=message) as info:
        fetch_api_headlines("BTC/USDT", _api(stub + path))
    assert "secret-token" not in str(info.value)


def test_unreachable_and_slow_apis_fail_within_the_timeout(stub, token):
    with pytest.raises(NewsSourceError, match="unreachable"):
        fetch_api_headlines("BTC", _api(f"http://127.0.0.1:{_closed_port()}/cp"))
    start = time.perf_counter()
    with pytest.raises(NewsSourceError, match="unreachable within 0.5s"):
        fetch_api_headlines("BTC", _api(stub + "/slow", timeout_s=0.5))
    assert time.perf_counter() - start < 2.5  # bounded by the timeout, not the 3 s server


def test_api_without_token_is_not_called(stub, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(NewsSourceError, match=f"set {TOKEN_ENV}"):
        fetch_api_headlines("BTC", _api(stub + "/cp"))
    _Stub.seen.clear()
    found = find_headlines("BTC/USDT", None, NewsSettings(api=_api(stub + "/cp")), NewsFileCache())
    assert found.headlines == [] and found.source == "none" and _Stub.seen == []


def test_source_order_request_api_file_none(stub, token, tmp_path, monkeypatch):
    monkeypatch.delenv(NEWS_FILE_ENV, raising=False)
    path = tmp_path / "news.csv"
    path.write_text("published_at,symbol,title\n2024-03-01T07:00:00Z,BTC/USDT,From the file\n")
    files = NewsFileCache()
    both = NewsSettings(news_file=str(path), api=_api(stub + "/cp"))
    assert find_headlines("BTC/USDT", [], both, files).source == "request"
    assert find_headlines("BTC/USDT", None, both, files).source == "api:cryptopanic"
    down = NewsSettings(news_file=str(path), api=_api(f"http://127.0.0.1:{_closed_port()}/x"))
    fallback = find_headlines("BTC/USDT", None, down, files)
    assert [h.title for h in fallback.headlines] == ["From the file"]
    assert fallback.source == "file:news.csv" and "fell back to the news file" in fallback.note
    monkeypatch.setenv(NEWS_FILE_ENV, str(path))
    assert find_headlines("BTC/USDT", None, NewsSettings(api=None), files).source == "file:news.csv"
    monkeypatch.delenv(NEWS_FILE_ENV)
    none = find_headlines("BTC/USDT", None, NewsSettings(api=None), files)
    assert none.source == "none" and "no news source configured" in none.note
