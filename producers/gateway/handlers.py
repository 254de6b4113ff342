"""The gateway's request handling: who is calling, within which limits, publishing what.

Checks run in this order: 400 (a header that must come once came twice), 401 (token), 429
(rate), 403 (type), 415 (content type), 413 (size, then JSON values), 400 (JSON: malformed, or
an object with a key twice), 422 (schema, then the Kafka key's characters), then Kafka: 201
after the broker's acknowledgement, or 503 saying whether anything was written. A batch is read
as plain JSON first: its event types are authorized (403) and its events counted against the
token's rate (429) before any event is validated. The work per request is bounded: at most
``max_json_values`` JSON values per event (413), the first ``max_errors`` field errors listed
(with their count). A client that goes away before its body arrived is counted as status 499
and logged without a traceback.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast
from uuid import UUID

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from evstream.errors import GatewayRequestError
from evstream.producers.delivery import Delivery
from evstream.producers.gateway.auth import Principal, TokenStore
from evstream.producers.gateway.http import (
    PROBLEM_JSON,
    InvalidEvent,
    canonical,
    check_json_content_type,
    check_key,
    check_unique_keys,
    check_values,
    from_validation,
    json_response,
    problem_response,
    read_body,
    too_many,
    truncated,
    unique_object,
    upper_bound,
)
from evstream.producers.gateway.idempotency import IdempotencyStore, Stored, event_id_for
from evstream.producers.gateway.metrics import observe
from evstream.producers.gateway.publisher import Outgoing, Publisher
from evstream.producers.gateway.ratelimit import RateLimiter
from evstream.producers.gateway.settings import GatewaySettings
from evstream.schemas import Event
from evstream.schemas.events import check_traceparent

__all__ = ["HEADER_PATTERN", "Gateway", "published"]

log = logging.getLogger("evstream.gateway")
Endpoint = Callable[[Request], Awaitable[Response]]
Run = Callable[[str | None, str], Awaitable[tuple[int, dict[str, Any]]]]


def published(d: Delivery) -> dict[str, Any]:
    """The JSON of a :class:`Delivery` (what a 201 carries per event)."""
    return {
        "event_id": str(d.event_id),
        "event_type": d.event_type,
        "topic": d.topic,
        "partition": d.partition,
        "offset": d.offset,
    }


def internal_error() -> Response:
    """A 500 as problem+json for an error nobody expected (logged with its traceback)."""
    log.exception("gateway request failed")
    return problem_response(GatewayRequestError(500, "internal error", "the gateway failed; see its log"))


CLIENT_CLOSED = 499
"""The status counted for a client that disconnected before its request was read (nginx's 499);
nothing is sent: nobody is listening."""


def client_closed(request: Request, route: str) -> Response:
    timed_out = request.scope.get("evstream.body_timeout", False)
    log.info(
        "client %s %s before its body arrived (%s)",
        request.client.host if request.client else "?",
        "timed out" if timed_out else "disconnected",
        route,
    )
    return Response(status_code=408 if timed_out else CLIENT_CLOSED)


HEADER_PATTERN = r"^[\x21-\x7e]([\x20-\x7e]{0,253}[\x21-\x7e])?$"
"""Idempotency-Key, X-Correlation-Id, X-Causation-Id: 1-255 printable ASCII characters, no space
at either end (what the OpenAPI document says)."""
_HEADER_VALUE = re.compile(HEADER_PATTERN)


_ONCE = {
    name.lower().encode(): name
    for name in ("Authorization", "Content-Type", "Idempotency-Key", "X-Correlation-Id", "X-Causation-Id")
}
"""Headers a request may carry at most once: with two, which one counts would be a guess."""


def check_unrepeated(request: Request) -> None:
    """400 when a header of :data:`_ONCE` comes more than once (checked before the token)."""
    seen: set[bytes] = set()
    for name, _ in request.scope["headers"]:
        if name in _ONCE:
            if name in seen:
                raise GatewayRequestError(
                    400, "ambiguous request", f"{_ONCE[name]} was sent more than once; send it once"
                )
            seen.add(name)


def key_errors(events: Iterable[tuple[Event, list[str | int]]]) -> list[dict[str, Any]]:
    """The 422 errors of events whose Kafka key (aggregate field) holds a control character."""
    errors = []
    for event, loc in events:
        field = event.aggregate_field
        error = check_key(field, getattr(event, field, None), loc) if field else None
        if error is not None:
            errors.append(error)
    return errors


def _header(request: Request, name: str) -> str | None:
    value = request.headers.get(name)
    if value is None:
        return None
    if _HEADER_VALUE.fullmatch(value) is None:
        raise GatewayRequestError(
            400, "bad request", f"{name} must be 1-255 printable ASCII characters (no space at either end)"
        )
    return value


class Gateway:
    """Builds the endpoints; holds the token store, rate limiter, idempotency store and publisher."""

    def __init__(
        self,
        settings: GatewaySettings,
        tokens: TokenStore,
        publisher: Publisher,
        batch_model: type[BaseModel],
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.publisher = publisher
        self.batch_model = batch_model
        self.limiter = RateLimiter()
        self.keys = IdempotencyStore(settings.idempotency_ttl_s, settings.idempotency_max_keys)
        self.known_types = {m.event_type() for m in publisher.catalog}

    # ------------------------------------------------------------------ checks

    def admit(self, request: Request) -> Principal:
        """The caller (401 without a known token), within its rate (429); first, 400 for a
        repeated header (two tokens: which one is the caller?)."""
        check_unrepeated(request)
        principal = self.tokens.authenticate(request.headers.get("authorization"))
        if principal is None:
            raise GatewayRequestError(
                401,
                "unauthorized",
                "send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": 'Bearer realm="evstream"'},
            )
        wait = self.limiter.admit(principal.name, principal.rate)
        if wait is not None:
            raise too_many(wait, str(principal.rate))
        return principal

    def charge(self, principal: Principal, events: int) -> None:
        """Count the events of a batch beyond the one :meth:`admit` counted (429 if over the rate)."""
        burst = principal.rate.amount
        if events > burst:
            raise GatewayRequestError(
                413,
                "payload too large",
                f"token {principal.name!r} may send at most {burst} events per request ({principal.rate})",
            )
        if events > 1:
            wait = self.limiter.admit(principal.name, principal.rate, events - 1)
            if wait is not None:
                raise too_many(wait, str(principal.rate))

    async def body(self, request: Request) -> bytes:
        check_json_content_type(request)
        return await read_body(request, self.settings.max_body_bytes)

    @staticmethod
    def outgoing(
        request: Request, principal: Principal, event: Event, topic: str, event_id: UUID | None
    ) -> Outgoing:
        """The event with its envelope fields: source gateway/<token>, ids and trace from headers."""
        try:  # an invalid traceparent is ignored (W3C: start a new trace), never an error
            traceparent = check_traceparent(request.headers.get("traceparent"))
        except ValueError:
            traceparent = None
        return Outgoing(
            event,
            topic,
            f"gateway/{principal.name}",
            event_id,
            _header(request, "x-correlation-id"),
            _header(request, "x-causation-id"),
            traceparent,
        )

    async def once(
        self, request: Request, principal: Principal, route: str, content: Callable[[], bytes], run: Run
    ) -> Response:
        """Run ``run(key, fingerprint)`` once per Idempotency-Key; repeats get the first response.

        The key is bound to ``content()``: the validated request in a canonical form, so a retry
        serialised again (other key order or spacing) is the same request, and another content a
        409. Every header is checked first: a malformed one is a 400 also for a repeat."""
        _header(request, "x-correlation-id")
        _header(request, "x-causation-id")
        key = _header(request, "idempotency-key")
        if key is None:
            status, payload = await run(None, "")
            return json_response(status, payload)
        scope = (principal.name, route, key)
        fingerprint = hashlib.sha256(content()).hexdigest()
        stored = await self.keys.claim(scope, fingerprint)
        if stored is not None:
            return Response(
                stored.body,
                stored.status,
                {**stored.headers, "Idempotent-Replayed": "true"},
                media_type=stored.media_type,
            )
        try:
            status, payload = await run(key, fingerprint)
        except GatewayRequestError as exc:
            if exc.status < 500:  # refused as a pydantic 422 would be: the key stays unbound
                self.keys.finish(scope, None)
                raise
            # waiting repeats get this answer (Retry-After included); later ones run again
            failed = problem_response(exc)
            self.keys.finish(
                scope, Stored(fingerprint, exc.status, bytes(failed.body), PROBLEM_JSON, exc.headers)
            )
            raise
        except BaseException:
            self.keys.finish(scope, None)
            raise
        response = json_response(status, payload)
        self.keys.finish(scope, Stored(fingerprint, status, bytes(response.body)))
        return response

    # ------------------------------------------------------------------ endpoints

    def single(self, model: type[Event]) -> Endpoint:
        """``POST /v1/events/<type>``: one event, 201 once Kafka acknowledged it."""
        event_type = model.event_type()
        topic = self.publisher.topic_for(event_type)

        async def publish_event(request: Request) -> Response:
            started = time.perf_counter()
            try:
                principal = self.admit(request)
                if not principal.may_publish(event_type):
                    raise GatewayRequestError(
                        403, "forbidden", f"token {principal.name!r} may not publish {event_type}"
                    )
                body = await self.body(request)
                check_values(body, self.settings.max_json_values, event_type)
                check_unique_keys(body)
                try:
                    event = model.model_validate_json(body)  # strict: 1.0 is no integer
                except ValidationError as exc:
                    raise from_validation(exc, event_type, self.settings.max_errors) from exc
                bad_key = key_errors([(event, [])])
                if bad_key:
                    raise truncated(bad_key, self.settings.max_errors, event_type)

                async def run(key: str | None, fingerprint: str) -> tuple[int, dict[str, Any]]:
                    event_id = (
                        None if key is None else event_id_for(principal.name, event_type, key, fingerprint)
                    )
                    out = self.outgoing(request, principal, event, topic, event_id)
                    return 201, published(await self.publisher.publish(out))

                response = await self.once(
                    request, principal, event_type, lambda: canonical(event.model_dump(mode="json")), run
                )
            except GatewayRequestError as exc:
                response = problem_response(exc)
            except ClientDisconnect:
                response = client_closed(request, event_type)
            except Exception:
                response = internal_error()
            observe(event_type, response.status_code, started)
            return response

        return publish_event

    async def batch(self, request: Request) -> Response:
        """``POST /v1/events:batch``: many events, each acknowledged, or all in one transaction."""
        started = time.perf_counter()
        try:
            principal = self.admit(request)
            body = await self.body(request)
            batch: Any = self.validate_batch(principal, body)

            async def run(key: str | None, fingerprint: str) -> tuple[int, dict[str, Any]]:
                outgoing = [
                    self.outgoing(
                        request,
                        principal,
                        item.data,
                        self.publisher.topic_for(item.event_type),
                        None
                        if key is None
                        else event_id_for(principal.name, "batch", f"{key}#{n}", fingerprint),
                    )
                    for n, item in enumerate(batch.events)
                ]
                return await self._publish_batch(outgoing, atomic=batch.atomic)

            response = await self.once(request, principal, "batch", lambda: batch_content(batch), run)
        except GatewayRequestError as exc:
            response = problem_response(exc)
        except ClientDisconnect:
            response = client_closed(request, "batch")
        except Exception:
            response = internal_error()
        observe("batch", response.status_code, started)
        return response

    def validate_batch(self, principal: Principal, body: bytes) -> Any:
        """The validated batch. Read as plain JSON first (an object with a key twice: 400): its
        event types authorized (403) and its size charged to the token's rate (429) before any
        event is validated; then each event's Kafka key checked (422)."""
        batch = self._validated_batch(principal, body)
        bad_keys = key_errors((item.data, ["events", n, "data"]) for n, item in enumerate(batch.events))
        if bad_keys:
            raise truncated(bad_keys, self.settings.max_errors, "batch")
        return batch

    def _validated_batch(self, principal: Principal, body: bytes) -> Any:
        if upper_bound(body) > self.settings.max_batch_values:
            check_values(body, self.settings.max_batch_values, "the batch")
        try:
            envelope = json.loads(body, object_pairs_hook=unique_object)
        except RecursionError:
            raise GatewayRequestError(400, "malformed JSON", "the body is nested too deeply") from None
        except ValueError as exc:
            raise GatewayRequestError(400, "malformed JSON", f"the body is not valid JSON: {exc}") from None
        events = envelope.get("events") if isinstance(envelope, dict) else None
        if not isinstance(events, list) or not events:
            return self._validate_batch(body)  # the model says what is wrong (one error)
        limit = self.settings.max_batch_events
        if len(events) > limit:
            raise truncated(
                [
                    {
                        "loc": ["events"],
                        "msg": f"List should have at most {limit} items after validation, not {len(events)}",
                        "type": "too_long",
                    }
                ],
                self.settings.max_errors,
                "batch",
            )
        types = {
            i["event_type"] for i in events if isinstance(i, dict) and isinstance(i.get("event_type"), str)
        }
        forbidden = {t for t in types if not principal.may_publish(t)}
        if forbidden:
            known = sorted(forbidden & self.known_types)
            others = len(forbidden) - len(known)
            named = ", ".join(known + ([f"{others} unknown type(s)"] if others else []))
            raise GatewayRequestError(403, "forbidden", f"token {principal.name!r} may not publish {named}")
        self.charge(principal, len(events))
        if upper_bound(body) <= self.settings.max_json_values:
            return self._validate_batch(body)
        return self._validate_in_chunks(envelope, events)

    def _validate_batch(self, body: bytes, offset: int = 0) -> Any:
        try:
            return self.batch_model.model_validate_json(body)
        except ValidationError as exc:
            error = from_validation(exc, "batch", self.settings.max_errors)
            if isinstance(error, InvalidEvent):
                for e in error.errors or []:
                    e["loc"] = _batch_loc(cast(list[Any], e["loc"]), offset)
            raise error from exc

    def _validate_in_chunks(self, envelope: dict[str, Any], events: list[Any]) -> Any:
        """A large batch, validated a few events at a time (each chunk within ``max_json_values``),
        stopping at the chunk in which ``max_errors`` errors were reached."""
        limit, max_errors = self.settings.max_json_values, self.settings.max_errors
        atomic = json.dumps(envelope.get("atomic", False)).encode()
        raw: list[bytes] = []
        for n, item in enumerate(events):
            encoded = json.dumps(item).encode()
            check_values(encoded, limit, f"batch event {n}")
            raw.append(encoded)
        validated: list[Any] = []
        errors: list[dict[str, Any]] = []
        total = 0
        first = 0
        while first < len(raw) and len(errors) < max_errors:
            end, size = first, 0
            while end < len(raw) and (end == first or size + upper_bound(raw[end]) <= limit):
                size += upper_bound(raw[end])
                end += 1
            chunk = b'{"atomic": ' + atomic + b', "events": [' + b",".join(raw[first:end]) + b"]}"
            try:
                part = self._validate_batch(chunk, first)
                validated.extend(part.events)
            except InvalidEvent as exc:
                errors.extend(exc.errors or [])
                total += exc.error_count
            first = end
        if errors:
            raise truncated(errors, max_errors, "batch", total)
        return self.batch_model.model_construct(events=validated, atomic=part.atomic)

    async def _publish_batch(self, outgoing: list[Outgoing], *, atomic: bool) -> tuple[int, dict[str, Any]]:
        if atomic:
            done = await self.publisher.publish_atomic(outgoing)
            return 201, {"atomic": True, "results": [published(d) for d in done]}
        results = await self.publisher.publish_many(outgoing)
        failed = sum(1 for r in results if isinstance(r, GatewayRequestError))
        if failed:  # say exactly which were written, so the client retries only the rest
            listed = [
                {"index": n, "error": r.detail} if isinstance(r, GatewayRequestError) else published(r)
                for n, r in enumerate(results)
            ]
            raise GatewayRequestError(
                503,
                "Kafka unavailable",
                f"{failed} of {len(results)} events were not acknowledged; see errors",
                errors=listed,
                headers={"Retry-After": "1"},
            )
        return 201, {"atomic": False, "results": [published(r) for r in results if isinstance(r, Delivery)]}


def batch_content(batch: Any) -> bytes:
    """A validated batch in canonical form (what its Idempotency-Key is bound to)."""
    return canonical(
        {
            "atomic": batch.atomic,
            "events": [
                {"event_type": item.event_type, "data": item.data.model_dump(mode="json")}
                for item in batch.events
            ],
        }
    )


def _batch_loc(loc: list[Any], offset: int) -> list[Any]:
    """A batch error's location as a JSON path: ``["events", n, "data", ...]`` (pydantic puts the
    discriminator's value after the index; chunks are validated from ``offset``)."""
    if len(loc) >= 2 and loc[0] == "events" and isinstance(loc[1], int):
        rest = (
            loc[3:]
            if len(loc) >= 3 and isinstance(loc[2], str) and loc[2] not in ("data", "event_type")
            else loc[2:]
        )
        return ["events", loc[1] + offset, *rest]
    return loc
