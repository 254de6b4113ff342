"""Event ids: time-ordered ones for new events (UUIDv7, RFC 9562), cheap enough for the publish
hot path, and derived ones for records that carry no id (:func:`derived_event_id`).

Layout: 48-bit Unix milliseconds, version 7, a 12-bit counter (method 1 of RFC 9562 §6.2) that
keeps ids from one process strictly increasing within a millisecond, variant, 62 random bits.
Random bits come from a per-process generator seeded from the OS (and reseeded after fork), not
a syscall per id: an id is a unique label, not a secret.
"""

from __future__ import annotations

import os
import random
import threading
import time
from uuid import UUID, uuid5

__all__ = ["DERIVED_ID_NAMESPACE", "derived_event_id", "new_event_id"]

DERIVED_ID_NAMESPACE = UUID("ac94b130-1697-5343-ada7-d53d4ec62478")
"""The UUIDv5 namespace of :func:`derived_event_id`: ``uuid5(NAMESPACE_URL,
"https://evstream/derived-event-id")``. Fixed: changing it would change every derived id."""

_lock = threading.Lock()
_rng = random.Random(os.urandom(16))  # noqa: S311 - uniqueness, not secrecy (see module doc)
_last_ms = 0
_counter = 0


def _reseed() -> None:
    global _rng, _lock  # noqa: PLW0603 - process-wide generator state, rebuilt in the child
    _rng = random.Random(os.urandom(16))  # noqa: S311
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reseed)


def new_event_id() -> UUID:
    """A new UUIDv7; ids made by one process are strictly increasing."""
    global _last_ms, _counter  # noqa: PLW0603
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms, _counter = ms, _rng.getrandbits(11)  # leave headroom for the counter
        else:
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                _last_ms, _counter = _last_ms + 1, 0
        tail = _rng.getrandbits(62)
        value = (_last_ms << 80) | (0x7 << 76) | (_counter << 64) | (0b10 << 62) | tail
    return UUID(int=value)


def derived_event_id(topic: str, partition: int, offset: int) -> UUID:
    """The stable id of the record at ``topic[partition]@offset``: UUIDv5 of ``"topic/partition/offset"``
    in :data:`DERIVED_ID_NAMESPACE`.

    Given to records without a ``ce_id`` header (foreign producers): the same record read again
    gets the same id, so idempotent handlers and dedupe stores work for it too.
    """
    return uuid5(DERIVED_ID_NAMESPACE, f"{topic}/{partition}/{offset}")
