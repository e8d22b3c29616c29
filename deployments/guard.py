"""ASGI middleware in front of every endpoint: API key, body size and time limits, and the
per-request metrics and log line. Pure ASGI (no BaseHTTPMiddleware) so it costs microseconds per
request."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException

from deployments.observability import RequestMetrics, log_request

# The docs pages, their assets and the schema reveal nothing secret; Swagger UI fetches the
# schema without the key (it adds the key only to the calls it makes after "Authorize"). The
# assets are the files fastapi-offline serves from the package (a CDN would need a network).
DOCS_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
OPEN_PATHS = frozenset(
    {
        "/api/v1/health",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
        *(f"/static-offline-docs/{name}" for name in DOCS_ASSETS),
    }
)
FORECAST_PATHS = frozenset({"/api/v1/ml/predict", "/api/v1/ml/signal"})
# Seconds a client should wait before retrying, per kind of 503 (the Retry-After header)
RETRY_AFTER_S = {
    "overloaded": 1,
    "model_unavailable": 2,
    "sentiment_unavailable": 2,
    "registry_unavailable": 5,
}


class ApiError(HTTPException):
    """An error answered as JSON {"error": kind, "message": message} with an HTTP status.

    An HTTPException so FastAPI passes it through unchanged when raised while reading the body.
    """

    def __init__(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, message, headers)
        self.status, self.kind, self.message = status, kind, message


def error_body(kind: str, message: str) -> bytes:
    return json.dumps({"error": kind, "message": message}).encode()


class Guard:
    """Checks the API key and the body size before the app sees a request; measures it after.

    The limits come from `scope["app"].state` (`api_key`, `max_body_bytes`, `body_timeout_s`,
    `max_inflight_forecasts`), set by the ingress deployment from its arguments. Endpoints may
    add log fields to `request.state.log`.

    Admission: beyond `max_inflight_forecasts` forecast requests in progress in this replica,
    another is answered 503 overloaded with Retry-After as soon as its body is in, before it is
    parsed; queueing it instead would only make every request slower. A request counts from
    then on, so clients still uploading take no slot.
    """

    def __init__(self, app) -> None:
        self.app = app
        self.metrics: RequestMetrics | None = None  # created in the replica, on first request
        self.inflight = 0  # forecast requests admitted and not answered yet

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        state["start"], state["log"] = start, {}
        status, path = 500, scope["path"]
        config = scope["app"].state

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        rejection = self._reject(scope, config)
        admitted = False

        def admit() -> None:  # called once the body is in: slow uploads take no slot
            nonlocal admitted
            if _route_path(scope) not in FORECAST_PATHS:
                return
            if self.inflight >= config.max_inflight_forecasts:
                raise _overloaded(config.max_inflight_forecasts)
            self.inflight += 1
            admitted = True

        try:
            if rejection is not None:
                await _send_error(send_status, *rejection)
            else:
                limited = _limited(receive, config.max_body_bytes, config.body_timeout_s, admit)
                await self.app(scope, limited, send_status)
        finally:
            self.inflight -= admitted
            latency_ms = (time.perf_counter() - start) * 1000
            error = rejection[1] if rejection else state["log"].pop("error", None)
            if status >= 400 and error is None:
                error = f"http_{status}"
            if self.metrics is None:
                self.metrics = RequestMetrics()
            # unknown paths share one label so scanners cannot blow up the metric cardinality
            endpoint = "unmatched" if error == "http_404" else path
            self.metrics.record(endpoint, status, latency_ms, error)
            log_request(
                method=scope["method"],
                path=path,
                status=status,
                latency_ms=round(latency_ms, 3),
                error=error,
                **state["log"],
            )

    @staticmethod
    def _reject(scope, config) -> tuple[int, str, str] | None:
        headers = dict(scope["headers"])
        if config.api_key and _route_path(scope) not in OPEN_PATHS:
            given = headers.get(b"authorization", b"").decode("latin-1")
            scheme, _, token = given.strip().partition(" ")
            # RFC 7235: the scheme name is case-insensitive ("bearer", "BEARER")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), config.api_key.encode()
            ):
                return (
                    401,
                    "unauthorized",
                    "missing or wrong API key: send 'Authorization: "
                    "Bearer <key>' with the key the service was started with",
                )
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > config.max_body_bytes:
            return 413, "body_too_large", _too_large(int(length), config.max_body_bytes)
        return None


def _overloaded(limit: int) -> ApiError:
    seconds = RETRY_AFTER_S["overloaded"]
    return ApiError(
        503,
        "overloaded",
        f"the service is at capacity ({limit} forecasts in progress on this replica); retry "
        f"after {seconds} s",
        {"Retry-After": str(seconds)},
    )


def _route_path(scope) -> str:
    """The path below the app's route prefix (Serve passes the prefix as root_path)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _too_large(size: int, limit: int) -> str:
    return (
        f"request body of {size} bytes exceeds the limit of {limit} bytes; send fewer "
        "sequences per request"
    )


def _limited(receive, limit: int, timeout_s: float, on_complete: Callable[[], None]):
    """Wrap `receive` so a body without Content-Length still stops at the limit, and the whole
    body must arrive within `timeout_s` from now (the request's start in the ingress): a
    client that stalls mid-body (or
    announces more bytes than it sends) would otherwise hold an ingress slot for as long as it
    likes. `on_complete` runs once the body is in (and may refuse the request by raising)."""
    seen, complete = 0, False
    deadline = time.monotonic() + timeout_s

    async def receive_limited():
        nonlocal seen, complete
        if complete:  # later reads only wait for a disconnect: no deadline
            return await receive()
        try:
            message = await asyncio.wait_for(receive(), deadline - time.monotonic())
        except TimeoutError:
            raise ApiError(
                408,
                "request_timeout",
                f"the request body did not arrive within {timeout_s:g} s ({seen} bytes "
                "received); send the whole body without pausing",
                {"Connection": "close"},  # the rest of the body may still come: drop it
            ) from None
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise ApiError(413, "body_too_large", _too_large(seen, limit))
            complete = not message.get("more_body", False)
            if complete:
                on_complete()
        return message

    return receive_limited


async def _send_error(send, status: int, kind: str, message: str) -> None:
    body = error_body(kind, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
