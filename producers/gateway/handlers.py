"""The gateway's request handling: who is calling, within which limits, publishing what.

Checks run in this order: 401 (token), 429 (rate), 403 (type; for batches after parsing),
415 (content type), 413 (size), 400 (JSON), 422 (schema), then Kafka: 201 after the broker's
acknowledgement, or 503 saying whether anything was written.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from evstream.errors import GatewayRequestError
from evstream.producers.delivery import Delivery
from evstream.producers.gateway.auth import Principal, TokenStore
from evstream.producers.gateway.http import (
    check_json_content_type,
    from_validation,
    json_response,
    problem_response,
    read_body,
    too_many,
)
from evstream.producers.gateway.idempotency import IdempotencyStore, Stored, event_id_for
from evstream.producers.gateway.metrics import observe
from evstream.producers.gateway.publisher import Outgoing, Publisher
from evstream.producers.gateway.ratelimit import RateLimiter
from evstream.producers.gateway.settings import GatewaySettings
from evstream.schemas import Event
from evstream.schemas.events import check_traceparent

__all__ = ["Gateway", "published"]

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


def _header(request: Request, name: str, limit: int = 255) -> str | None:
    value = request.headers.get(name)
    if value is None:
        return None
    if not value or len(value) > limit or not value.isprintable():
        raise GatewayRequestError(400, "bad request", f"{name} must be 1-{limit} printable characters")
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

    # ------------------------------------------------------------------ checks

    def admit(self, request: Request) -> Principal:
        """The caller (401 without a known token), within its rate (429)."""
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
        self, request: Request, principal: Principal, route: str, body: bytes, run: Run
    ) -> Response:
        """Run ``run(key, fingerprint)`` once per Idempotency-Key; repeats get the first response."""
        key = _header(request, "idempotency-key")
        if key is None:
            status, payload = await run(None, "")
            return json_response(status, payload)
        scope = (principal.name, route, key)
        fingerprint = hashlib.sha256(body).hexdigest()
        stored = await self.keys.claim(scope, fingerprint)
        if stored is not None:
            return Response(
                stored.body, stored.status, {"Idempotent-Replayed": "true"}, media_type=stored.media_type
            )
        try:
            status, payload = await run(key, fingerprint)
        except GatewayRequestError as exc:  # waiting repeats get this answer; later ones run again
            failed = problem_response(exc)
            self.keys.finish(
                scope, Stored(fingerprint, exc.status, bytes(failed.body), "application/problem+json")
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
                try:
                    event = model.model_validate_json(body)
                except ValidationError as exc:
                    raise from_validation(exc, event_type) from exc

                async def run(key: str | None, fingerprint: str) -> tuple[int, dict[str, Any]]:
                    event_id = (
                        None if key is None else event_id_for(principal.name, event_type, key, fingerprint)
                    )
                    out = self.outgoing(request, principal, event, topic, event_id)
                    return 201, published(await self.publisher.publish(out))

                response = await self.once(request, principal, event_type, body, run)
            except GatewayRequestError as exc:
                response = problem_response(exc)
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
            try:
                batch: Any = self.batch_model.model_validate_json(body)
            except ValidationError as exc:
                raise from_validation(exc, "batch") from exc
            forbidden = sorted(
                {i.event_type for i in batch.events if not principal.may_publish(i.event_type)}
            )
            if forbidden:
                raise GatewayRequestError(
                    403, "forbidden", f"token {principal.name!r} may not publish {', '.join(forbidden)}"
                )

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

            response = await self.once(request, principal, "batch", body, run)
        except GatewayRequestError as exc:
            response = problem_response(exc)
        except Exception:
            response = internal_error()
        observe("batch", response.status_code, started)
        return response

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
