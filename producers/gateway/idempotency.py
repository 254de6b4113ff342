"""``Idempotency-Key``: a repeated request gets the first one's response, and Kafka one record.

Keys are scoped to the caller and the route, and bound to the first request's body: the same key
with another body is refused (409 Conflict: the request is valid, the key is taken), also after
a failure. The first request with a key runs;
concurrent repeats wait for it and get its response, even a failure (so a delivery that timed out
in flight is not published again while it may still land). Later repeats get the stored response
if it succeeded, or run again if it failed. Storage is this process's memory (bounded by a TTL
and a key count). The event id is derived from the key and the body, so a repeat that reaches
another process or outlives the store carries the same event id and consumers' dedupe drops it,
while a corrected body after a failure gets a new id.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from evstream.errors import GatewayRequestError

__all__ = ["IdempotencyStore", "Stored", "event_id_for"]

_NAMESPACE = uuid.UUID("6f1c5b0e-3c55-4a6e-9a53-6a2f3b1f7e01")
Scope = tuple[str, str, str]  # caller, route, key


def event_id_for(caller: str, route: str, key: str, fingerprint: str) -> uuid.UUID:
    """The event id of the request with this key and body (stable across retries and processes)."""
    return uuid.uuid5(_NAMESPACE, f"{caller}\n{route}\n{key}\n{fingerprint}")


@dataclass(frozen=True, slots=True)
class Stored:
    """A response to repeat; ``ok`` responses are kept, failures only handed to waiters."""

    fingerprint: str
    status: int
    body: bytes
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)  # e.g. a 503's Retry-After

    @property
    def ok(self) -> bool:
        return self.status < 300


class IdempotencyStore:
    """Responses by (caller, route, key), kept for ``ttl_s``, at most ``max_keys`` of them."""

    def __init__(self, ttl_s: float, max_keys: int) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._done: OrderedDict[Scope, tuple[float, Stored]] = OrderedDict()
        self._running: dict[Scope, tuple[str, asyncio.Future[Stored | None]]] = {}

    def __len__(self) -> int:
        return len(self._done)

    async def claim(self, scope: Scope, fingerprint: str) -> Stored | None:
        """The response to answer with, or None when the caller should run the request.

        A caller that gets None must call :meth:`finish`. Raises a 409 when the key was used with
        another body (a stored response, a failed attempt, or one still running).
        """
        while True:
            self._expire()
            found = self._done.get(scope)
            if found is not None:
                self._check(scope, found[1].fingerprint, fingerprint)
                if found[1].ok:
                    return found[1]
                del self._done[scope]  # a failure: this attempt runs again
            running = self._running.get(scope)
            if running is None:
                self._running[scope] = (fingerprint, asyncio.get_running_loop().create_future())
                return None
            self._check(scope, running[0], fingerprint)
            result = await asyncio.shield(running[1])
            if result is not None:
                return result
            # the first attempt ended without a response (e.g. cancelled): this one runs

    def finish(self, scope: Scope, result: Stored | None) -> None:
        """Record the outcome of a claimed request (None: no response); wake those waiting."""
        if result is not None:
            self._done[scope] = (time.monotonic() + self.ttl_s, result)
            self._done.move_to_end(scope)
            while len(self._done) > self.max_keys:
                self._done.popitem(last=False)
        _, waiting = self._running.pop(scope, ("", None))
        if waiting is not None and not waiting.done():
            waiting.set_result(result)

    @staticmethod
    def _check(scope: Scope, first: str, now: str) -> None:
        if first != now:
            raise GatewayRequestError(
                409, "idempotency key reused", f"Idempotency-Key {scope[2]!r} was used with a different body"
            )

    def _expire(self) -> None:
        now = time.monotonic()
        while self._done:
            scope, (expires, _) = next(iter(self._done.items()))
            if expires > now:
                break
            del self._done[scope]
