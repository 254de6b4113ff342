"""``Idempotency-Key``: a repeated request gets the first one's response, and Kafka one record.

Keys are scoped to the caller and the route. The first request with a key runs; concurrent
repeats wait for it; later repeats get the stored response. A repeat with a different body is
refused (422). Only successful responses are kept: after a failure the client may retry with
the same key. Storage is this process's memory (bounded by a TTL and a key count); the event id
is derived from the key as well, so even a repeat that reaches another process or outlives the
store carries the same event id, and consumers' dedupe by event id drops it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["IdempotencyStore", "Stored", "event_id_for"]

_NAMESPACE = uuid.UUID("6f1c5b0e-3c55-4a6e-9a53-6a2f3b1f7e01")


def event_id_for(caller: str, route: str, key: str) -> uuid.UUID:
    """The event id of the request with this key (stable across retries and processes)."""
    return uuid.uuid5(_NAMESPACE, f"{caller}\n{route}\n{key}")


@dataclass(frozen=True, slots=True)
class Stored:
    """A response to repeat."""

    fingerprint: str
    status: int
    body: bytes


class IdempotencyStore:
    """Responses by (caller, route, key), kept for ``ttl_s``, at most ``max_keys`` of them."""

    def __init__(self, ttl_s: float, max_keys: int) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._done: OrderedDict[tuple[str, str, str], tuple[float, Stored]] = OrderedDict()
        self._running: dict[tuple[str, str, str], asyncio.Future[Stored | None]] = {}

    def __len__(self) -> int:
        return len(self._done)

    async def claim(self, scope: tuple[str, str, str]) -> Stored | None:
        """The stored response for ``scope``, or None when the caller should run the request.

        A caller that gets None must call :meth:`finish` (with the response, or None on failure).
        """
        while True:
            self._expire()
            found = self._done.get(scope)
            if found is not None:
                return found[1]
            running = self._running.get(scope)
            if running is None:
                self._running[scope] = asyncio.get_running_loop().create_future()
                return None
            result = await asyncio.shield(running)
            if result is not None:
                return result
            # the first attempt failed: loop, and this request becomes the one that runs

    def finish(self, scope: tuple[str, str, str], result: Stored | None) -> None:
        """Record the outcome of a claimed request; wake those waiting for it."""
        if result is not None:
            self._done[scope] = (time.monotonic() + self.ttl_s, result)
            self._done.move_to_end(scope)
            while len(self._done) > self.max_keys:
                self._done.popitem(last=False)
        waiting = self._running.pop(scope, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(result)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._done:
            scope, (expires, _) = next(iter(self._done.items()))
            if expires > now:
                break
            del self._done[scope]
