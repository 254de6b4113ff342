"""One typed record per stored value, and the one rule that applies an event to it once.

**Exactly-once effect with constant-size state.** Each stored :class:`Row` carries, next to the
user's value, the offset of the last record applied to it *per origin partition* (the source
topic's partition the event was first read from; a re-keyed record carries its origin in a
header). An update whose origin offset is at or below the stored one was already applied and is
skipped (:func:`first_application`), so a record processed again after a crash or rebalance (or
forwarded twice to a re-keyed topic) changes nothing, and a row holds at most one offset per
origin partition, whatever its history. The offset of the re-keyed topic itself would not do: a
replayed forward lands at a new offset there.

Rows are stored (and written to changelogs) as JSON objects: ``{"value": ..., "applied":
{"orders:3": 1207}}`` plus ``"end"``/``"closed"`` for windows and ``"start"`` for sessions.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from evstream.streams.context import Received
from evstream.streams.metrics import SKIPPED_UPDATES

__all__ = ["Row", "decode_key", "encode_key", "first_application"]


class Row:
    """A stored value: the user's value (JSON form), the origin offsets applied to it, and for
    windows their bounds. ``model`` is the value's model instance (never stored): a row made by an
    update keeps only the model, and its JSON form is made when first needed (at the commit that
    writes it to the changelog: once per key and interval, however many updates it had)."""

    __slots__ = ("_value", "applied", "closed", "end", "model", "start")

    def __init__(
        self,
        value: dict[str, Any] | None,
        applied: dict[str, int] | None = None,
        end: int | None = None,
        closed: bool = False,
        start: int | None = None,
        *,
        model: BaseModel | None = None,
    ) -> None:
        self._value = value
        self.applied = applied if applied is not None else {}
        self.end = end  # window end (ms), sessions: the last event's time
        self.closed = closed
        self.start = start  # sessions: the first event's time
        self.model = model

    @property
    def value(self) -> dict[str, Any]:
        if self._value is None:
            assert self.model is not None  # a row has its value in one form or the other
            self._value = self.model.model_dump(mode="json")
        return self._value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Row):
            return NotImplemented
        mine = (self.value, self.applied, self.end, self.closed, self.start)
        return mine == (other.value, other.applied, other.end, other.closed, other.start)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        bounds = f"end={self.end!r}, closed={self.closed!r}, start={self.start!r}"
        return f"Row(value={self.value!r}, applied={self.applied!r}, {bounds})"

    def to_bytes(self) -> bytes:
        stored: dict[str, Any] = {"value": self.value, "applied": self.applied}
        if self.end is not None:
            stored["end"] = self.end
            stored["closed"] = self.closed
        if self.start is not None:
            stored["start"] = self.start
        return json.dumps(stored, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Row:
        """A stored row; the faust-era form (``{"v": ..., "o": {...}}``, before issue 22) is read
        too, so an app's existing changelogs recover under the new engine."""
        stored = json.loads(data)
        if "value" not in stored and "v" in stored:
            stored = {**stored, "value": stored["v"], "applied": stored.get("o", {})}
        return cls(
            stored["value"],
            stored.get("applied", {}),
            stored.get("end"),
            stored.get("closed", False),
            stored.get("start"),
        )

    def applied_after(self, received: Received, value: BaseModel, **bounds: Any) -> Row:
        """The row that ``received``'s update leaves: ``value`` with its origin offset noted."""
        applied = {**self.applied, received.origin: received.origin_offset}
        return Row(None, applied, model=value, **bounds)


def first_application(table: str, slot: int, received: Received, key: str, row: Row | None) -> bool:
    """True when ``received``'s update of ``key`` is new: its origin offset is above the one the
    row stored for that origin. Decided once per event and key (``slot`` names the table), so a
    handler updating one key twice applies both changes."""
    decisions = received._decisions
    decided = decisions.get((slot, key))
    if decided is None:
        done = row is not None and row.applied.get(received.origin, -1) >= received.origin_offset
        decided = decisions[(slot, key)] = not done
        if done:
            SKIPPED_UPDATES.labels(table).inc()
    return decided


def encode_key(key: str) -> bytes:
    """A table key as written to its changelog (a JSON string, readable by any tool)."""
    return json.dumps(key).encode()


def decode_key(data: bytes | str | None) -> str:
    if data is None:
        return ""
    found = json.loads(data)
    return found if isinstance(found, str) else str(found)
