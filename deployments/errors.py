"""Turning every failure into a 4xx/5xx JSON body {"error", "message"} that names the problem."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from deployments.guard import RETRY_AFTER_S, ApiError

log = logging.getLogger("ray.serve")
MAX_LISTED_ERRORS = 5
LAYOUT_HINT = (
    "sequences is a list of sequences, each a list of bars, each bar "
    "[open, high, low, close, volume]"
)


def _where(loc: tuple) -> str:
    """("body", "sequences", 0, 3, 2) -> "sequences[0][3][2]"."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def describe_validation(errors: list[dict]) -> str:
    """A short readable summary of pydantic errors: where and what, first few of them."""
    parts = []
    for err in errors[:MAX_LISTED_ERRORS]:
        if err["type"] == "json_invalid":
            ctx = err.get("ctx", {}).get("error", "")
            parts.append(f"body is not valid JSON ({ctx} at character {err['loc'][-1]})")
        else:
            parts.append(f"{_where(err['loc'])}: {err['msg']}")
    if len(errors) > MAX_LISTED_ERRORS:
        parts.append(f"and {len(errors) - MAX_LISTED_ERRORS} more")
    if any(err["type"] == "list_type" and "sequences" in err["loc"] for err in errors):
        parts.append(LAYOUT_HINT)
    return "; ".join(parts)


def describe_ragged(sequences: list) -> str:
    """Why nested lists do not form an [n, T, 5] array: the first sequence or bar that differs."""
    first = len(sequences[0])
    for i, seq in enumerate(sequences):
        if len(seq) != first:
            return (
                f"sequences[{i}] has {len(seq)} bars but sequences[0] has {first}; every "
                "sequence needs the model's sequence_length bars"
            )
        for t, bar in enumerate(seq):
            if len(bar) != 5:
                return (
                    f"sequences[{i}][{t}] has {len(bar)} values; each bar is "
                    "[open, high, low, close, volume]"
                )
    return LAYOUT_HINT


def unavailable(kind: str, message: str) -> ApiError:
    """A 503 of one of the RETRY_AFTER_S kinds, with its Retry-After header."""
    return ApiError(503, kind, message, {"Retry-After": str(RETRY_AFTER_S[kind])})


def _json(
    status: int, kind: str, message: str, headers: dict | None = None, **extra
) -> JSONResponse:
    headers = {**(headers or {}), **({"WWW-Authenticate": "Bearer"} if status == 401 else {})}
    return JSONResponse({"error": kind, "message": message, **extra}, status, headers=headers)


def describe_unparsable(cause: BaseException | None) -> str:
    """Why FastAPI could not parse a JSON body (it answers only "error parsing the body")."""
    if isinstance(cause, UnicodeDecodeError):
        return (
            f"body is not valid UTF-8 (byte 0x{cause.object[cause.start]:02x} at position "
            f"{cause.start}); send JSON encoded as UTF-8"
        )
    if isinstance(cause, RecursionError):
        return "body nests JSON arrays or objects too deeply; sequences need only 3 levels"
    return f"body could not be parsed as JSON ({type(cause).__name__})"


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that shape every error response of the app."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        request.state.log["error"] = exc.kind
        return _json(exc.status, exc.kind, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        request.state.log["error"] = "invalid_request"
        errors = list(exc.errors())
        details = [{"loc": _where(e["loc"]), "msg": e["msg"]} for e in errors[:20]]
        return _json(422, "invalid_request", describe_validation(errors), details=details)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI's body parsing
            request.state.log["error"] = "invalid_body"
            return _json(400, "invalid_body", describe_unparsable(exc.__cause__))
        if exc.status_code == 404:
            message = f"no endpoint {request.method} {request.url.path}; see /docs"
        else:
            message = f"{exc.detail} for {request.method} {request.url.path}"
        # keeps Starlette's headers, e.g. the Allow of a 405
        return _json(exc.status_code, f"http_{exc.status_code}", message, exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        request.state.log["error"] = "internal_error"
        return _json(
            500,
            "internal_error",
            f"internal error ({type(exc).__name__}); this is a "
            "bug, please report it with the request that caused it",
        )
