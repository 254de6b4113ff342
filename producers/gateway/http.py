"""HTTP plumbing of the gateway: reading bodies within limits, problem responses, error mapping."""

from __future__ import annotations

import json
import math
import re
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from evstream.errors import GatewayRequestError

__all__ = [
    "KEY_CONTROL_CHARACTERS",
    "KEY_PATTERN",
    "PROBLEM_JSON",
    "InvalidEvent",
    "Problem",
    "canonical",
    "check_json_content_type",
    "check_key",
    "check_unique_keys",
    "check_values",
    "count_values",
    "from_validation",
    "json_response",
    "problem_response",
    "read_body",
    "too_many",
    "truncated",
    "unique_object",
]

PROBLEM_JSON = "application/problem+json"
T = TypeVar("T")


class Problem(BaseModel):
    """An error response (RFC 9457 problem details); ``errors`` lists field errors for 422."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = Field(
        default=None,
        description="Per-field errors (422: the first ones, see error_count) or per-event outcomes "
        "(503 of a batch).",
    )
    error_count: int | None = Field(
        default=None, ge=0, description="How many errors there were in all (422); ``errors`` lists the first."
    )


class InvalidEvent(GatewayRequestError):
    """A 422 whose ``errors`` are the first of ``error_count`` field errors."""

    def __init__(self, detail: str, errors: list[dict[str, Any]], error_count: int) -> None:
        super().__init__(422, "invalid event", detail, errors=errors)
        self.error_count = error_count


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
    if isinstance(error, InvalidEvent):
        body["error_count"] = error.error_count
    return Response(json.dumps(body).encode(), error.status, error.headers, media_type=PROBLEM_JSON)


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


def upper_bound(body: bytes) -> int:
    """At least the number of JSON values in ``body`` (each is the first in its container or follows
    a comma), counted in C without parsing. Brackets and commas inside strings make it larger."""
    return body.count(b",") + body.count(b"{") + body.count(b"[") + 1


def count_values(body: bytes) -> int:
    """The number of JSON values (objects, arrays, scalars; not keys) in a valid JSON ``body``,
    counted in C without parsing: 1 + commas + non-empty containers, outside strings."""
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")  # then every quote delimits a string
    outside = b"".join(unescaped.split(b'"')[::2]).translate(None, b" \t\r\n")
    opened = outside.count(b"{") + outside.count(b"[")
    empty = outside.count(b"{}") + outside.count(b"[]")
    return 1 + outside.count(b",") + opened - empty


def check_values(body: bytes, limit: int, what: str) -> None:
    """413 when the JSON ``body`` holds more than ``limit`` values.

    What a request costs to validate (and what a 422 lists) grows with its number of values, not
    its bytes: a 1 MiB body of ``[{}, {}, ...]`` is 350k objects with a few errors each. Nothing
    is parsed here; bodies whose upper bound is within the limit (every usual event) cost three
    byte counts.
    """
    if upper_bound(body) > limit and count_values(body) > limit:
        raise too_many_values(limit, what)


def too_many_values(limit: int, what: str) -> GatewayRequestError:
    return GatewayRequestError(
        413,
        "payload too large",
        f"{what} holds more than {limit} JSON values (the gateway's limit)",
    )


def unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads`: 400 for an object with a key twice (JSON
    leaves that undefined: parsers keep the first or the last value, so the request is ambiguous)."""
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                shown = key if len(key) <= 64 else key[:64] + "..."
                raise GatewayRequestError(
                    400, "ambiguous JSON", f"the key {shown!r} appears twice in one JSON object; send it once"
                )
            seen.add(key)
    return found


def check_unique_keys(body: bytes) -> None:
    """400 when an object anywhere in ``body`` has a key twice. A body that is not JSON passes:
    the model's validation says what is wrong with it, as before."""
    try:
        json.loads(body, object_pairs_hook=unique_object)
    except (ValueError, RecursionError):
        return


def canonical(content: Any) -> bytes:
    """One byte string per JSON content: sorted keys, no spaces (what an Idempotency-Key is bound
    to, so a retry serialised again, in another key order or spacing, is the same request)."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


KEY_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
"""What the OpenAPI document says of every event's key field (:data:`KEY_CONTROL_CHARACTERS`)."""
KEY_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""Refused in an event's Kafka key (its aggregate field): the C0 controls U+0000-U+001F, DEL
U+007F and the C1 controls U+0080-U+009F (Unicode category Cc). Keys are logged, compared and
shown in tools; a NUL, newline or escape in one hides or forges what is shown."""
_KEY_MESSAGE = "The Kafka key must not contain control characters (U+0000-U+001F, U+007F-U+009F)"


def check_key(field: str, value: object, loc: list[str | int]) -> dict[str, Any] | None:
    """The 422 error (as pydantic lists them) for a key field ``value`` with a control character."""
    if isinstance(value, str) and KEY_CONTROL_CHARACTERS.search(value) is not None:
        return {"loc": [*loc, field], "msg": _KEY_MESSAGE, "type": "key_control_character"}
    return None


def truncated(errors: list[dict[str, Any]], limit: int, what: str, total: int | None = None) -> InvalidEvent:
    """A 422 listing the first ``limit`` of ``errors`` (``total`` of them in all)."""
    total = len(errors) if total is None else total
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "(body)"
    return InvalidEvent(f"{what}: {where}: {first['msg']} ({total} error(s))", errors[:limit], total)


def from_validation(exc: ValidationError, what: str, limit: int = 20) -> GatewayRequestError:
    """400 for a body that is not JSON; 422 with the first ``limit`` field errors for one that does
    not validate (and how many there were)."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    broken = next((e for e in errors[:1] if e["type"] == "json_invalid"), None)
    if broken is not None:
        return GatewayRequestError(400, "malformed JSON", f"the body is not valid JSON: {broken['msg']}")
    fields: list[dict[str, Any]] = [
        {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors[:limit]
    ]
    return truncated(fields, limit, what, exc.error_count())


def too_many(wait_s: float, rate: str) -> GatewayRequestError:
    """429 with Retry-After in whole seconds (at least 1)."""
    return GatewayRequestError(
        429,
        "too many requests",
        f"this token may send {rate}",
        headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
    )
