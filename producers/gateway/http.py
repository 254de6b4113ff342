"""HTTP plumbing of the gateway: reading bodies within limits, problem responses, error mapping."""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from evstream.errors import GatewayRequestError

__all__ = [
    "Problem",
    "check_json_content_type",
    "from_validation",
    "json_response",
    "problem_response",
    "read_body",
    "too_many",
]


class Problem(BaseModel):
    """An error response (RFC 9457 problem details); ``errors`` lists field errors for 422."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = Field(default=None, description="Per-field errors (422).")


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body).encode(), status, headers, media_type="application/json")


def problem_response(error: GatewayRequestError) -> Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
    }
    if error.errors is not None:
        body["errors"] = error.errors
    return Response(
        json.dumps(body).encode(), error.status, error.headers, media_type="application/problem+json"
    )


def check_json_content_type(request: Request) -> None:
    """415 unless the body is declared JSON (``application/json`` or ``application/*+json``)."""
    declared = request.headers.get("content-type", "")
    media = declared.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise GatewayRequestError(
            415,
            "unsupported media type",
            f"send the event as JSON with Content-Type: application/json (got {declared or 'none'!r})",
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; 413 as soon as it is known to exceed ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise GatewayRequestError(400, "bad request", "Content-Length is not a number")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> GatewayRequestError:
    return GatewayRequestError(
        413, "payload too large", f"the body exceeds the gateway's limit of {limit} bytes"
    )


def from_validation(exc: ValidationError, what: str) -> GatewayRequestError:
    """400 for a body that is not JSON; 422 with every field error for one that does not validate."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    broken = next((e for e in errors if e["type"] == "json_invalid"), None)
    if broken is not None:
        return GatewayRequestError(400, "malformed JSON", f"the body is not valid JSON: {broken['msg']}")
    fields: list[dict[str, Any]] = [
        {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors
    ]
    first = fields[0]
    where = ".".join(str(part) for part in first["loc"]) or "(body)"
    return GatewayRequestError(
        422, "invalid event", f"{what}: {where}: {first['msg']} ({len(fields)} error(s))", errors=fields
    )


def too_many(wait_s: float, rate: str) -> GatewayRequestError:
    """429 with Retry-After in whole seconds (at least 1)."""
    return GatewayRequestError(
        429,
        "too many requests",
        f"this token may send {rate}",
        headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
    )
