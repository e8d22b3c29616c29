"""A small load generator for the fault tests: raw HTTP/1.1 over asyncio streams.

httpx costs too much CPU per request to drive 150 concurrent clients from the same 2-core
machine as the server (the client became the bottleneck); this reads a response in a few
lines. Every outcome is a `Result`, so a test can count failures and latencies by kind.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    sent: float  # time.perf_counter() when the request was sent
    latency_s: float
    status: int | str  # the HTTP status, or the exception's name (e.g. "TimeoutError")
    retry_after: str | None
    body: bytes

    @property
    def kind(self) -> str:
        """The `error` of a JSON error body, "proxy" for Serve's plain-text answers, or ""."""
        if self.status == 200 or not self.body:
            return ""
        try:
            return json.loads(self.body)["error"]
        except (ValueError, KeyError, TypeError):
            return "proxy"


class Connection:
    """One keep-alive connection to host:port (reopened after a close or an error)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes, headers: dict) -> tuple:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(head.encode() + b"\r\n" + body)
        try:
            status, response_headers, data = await self._read_response()
        except BaseException:
            self.close()
            raise
        if response_headers.get("connection") == "close":
            self.close()
        return status, response_headers, data

    async def _read_response(self) -> tuple[int, dict, bytes]:
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            if key:
                headers[key.lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":  # Serve's own plain-text answers
            data = b""
            while size := int((await self.reader.readuntil(b"\r\n")).strip(), 16):
                data += (await self.reader.readexactly(size + 2))[:-2]
            await self.reader.readuntil(b"\r\n")
        else:
            data = await self.reader.readexactly(int(headers.get("content-length", 0)))
        return status, headers, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def post(conn: Connection, path: str, body: bytes, headers: dict, timeout: float) -> Result:
    sent = time.perf_counter()
    try:
        status, response_headers, data = await asyncio.wait_for(
            conn.request("POST", path, body, headers), timeout
        )
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
        return Result(sent, time.perf_counter() - sent, type(exc).__name__, None, b"")
    retry_after = response_headers.get("retry-after")
    return Result(sent, time.perf_counter() - sent, status, retry_after, data)


async def closed_loop(
    port: int, path: str, body: bytes, headers: dict, clients: int, seconds: float
) -> list[Result]:
    """`clients` clients, each sending its next request when the last one is answered and
    honouring Retry-After, for `seconds`."""
    results: list[Result] = []
    end = time.perf_counter() + seconds

    async def client() -> None:
        conn = Connection(port)
        while time.perf_counter() < end:
            result = await post(conn, path, body, headers, timeout=60)
            results.append(result)
            if result.retry_after:
                await asyncio.sleep(float(result.retry_after))
        conn.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return results


async def open_loop(
    port: int,
    path: str,
    body: bytes,
    headers: dict,
    rate: float,
    until: Callable[[list[Result]], bool],
    max_seconds: float,
    timeout: float,
) -> list[Result]:
    """Requests at a fixed rate, each on its own connection (a client's timeout: `timeout`),
    until `until(results so far)` holds (checked twice a second) or `max_seconds` have
    passed."""
    tasks: list[asyncio.Task] = []
    start = time.perf_counter()

    async def one() -> Result:
        conn = Connection(port)
        try:
            return await post(conn, path, body, headers, timeout)
        finally:
            conn.close()

    for i in range(int(rate * max_seconds)):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        tasks.append(asyncio.ensure_future(one()))
        if i % max(1, int(rate / 2)) == 0 and until([t.result() for t in tasks if t.done()]):
            break
    return list(await asyncio.gather(*tasks))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def tally(results: list[Result]) -> Counter:
    """How many answers of each status (and error kind): {"200": 90, "503 overloaded": 12}."""
    return Counter(f"{r.status} {r.kind}".strip() for r in results)
