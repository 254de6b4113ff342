"""Windows of event time: tumbling, hopping and session windows, with grace, final results and
expiry, on bounded state.

- **Stream time** is kept per partition: the largest event time seen there (stored with the
  table, so it survives restarts and moves with the partition).
- A window **closes** when stream time passes its end plus ``grace`` (sessions: their last event
  plus the inactivity ``gap`` plus ``grace``): its value is final, ``on_close(key, window, value,
  received)`` runs once (it may ``app.publish``), and it is kept, marked closed, until stream time
  passes its end plus ``expires``, when it is deleted.
- A **late** event (every window it belongs to is closed) changes nothing: it is counted in
  ``evstream_stream_late_events_total`` and, when ``late_topic`` is given, forwarded there.
- A key must be written from one partition only (as for any table); include the partition in
  the key for keys that arrive on several (``f"{currency}#p{received.partition}"``).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from pydantic import BaseModel

from evstream.errors import ConfigError
from evstream.streams.context import Received, Sent, current_received
from evstream.streams.metrics import LATE_EVENTS, WINDOWS_CLOSED
from evstream.streams.state.records import Row, first_application
from evstream.streams.state.tables import Change, TableState

if TYPE_CHECKING:
    from evstream.streams.topics import EventTopic

__all__ = ["OnClose", "SessionTable", "Window", "WindowedTable"]

M = TypeVar("M", bound=BaseModel)

_WATERMARK = "__watermark__#"


class Window(NamedTuple):
    start: datetime
    end: datetime


OnClose = Callable[[str, Window, Any, Received], Awaitable[None] | None]
Forward = Callable[[Received, "EventTopic"], Any]


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def ms_delta(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


def dt(stamp_ms: int) -> datetime:
    return datetime.fromtimestamp(stamp_ms / 1000, UTC)


class _TimedTable(TableState[M]):
    """Stream time, the index of open windows, closing and expiry: shared by both kinds."""

    def __init__(
        self,
        name: str,
        model: type[M],
        partitions: int,
        changelog: str,
        *,
        grace: int,
        expires: int,
        on_close: OnClose | None,
        late_topic: EventTopic | None,
        forward: Forward,
    ) -> None:
        super().__init__(name, model, partitions, changelog)
        self.grace, self.expires = grace, max(expires, grace)
        self.on_close = on_close
        self.late_topic = late_topic
        self._forward = forward
        self._index: dict[int, dict[str, tuple[int, bool]]] = {}  # partition -> stored key -> (due, closed)

    def forget(self, partition: int | None) -> None:
        if partition is None:
            self._index = {}
        else:
            self._index.pop(partition, None)

    def _due(self, row: Row) -> int:
        """The time from which grace and expiry count (a window's end)."""
        assert row.end is not None
        return row.end

    def index(self, partition: int) -> dict[str, tuple[int, bool]]:
        found = self._index.get(partition)
        if found is None:
            found = self._index[partition] = {}
            for key, row in self.partition_rows(partition):
                if row.end is not None:
                    found[key] = (self._due(row), row.closed)
        return found

    def stream_time(self, partition: int) -> int | None:
        row = self.row(partition, f"{_WATERMARK}{partition}")
        return None if row is None else int(row.value["t"])

    def _late(self, received: Received) -> None:
        LATE_EVENTS.labels(self.name).inc()
        if self.late_topic is not None:
            self._forward(received, self.late_topic)

    def _advance(self, received: Received, t: int) -> None:
        """Stream time moves to ``t`` (when later): close and expire what it passed."""
        partition = received.partition
        now = self.stream_time(partition)
        if now is not None and t <= now:
            return
        self.put(partition, f"{_WATERMARK}{partition}", Row({"t": t}))
        index = self.index(partition)
        for skey, (due, closed) in sorted(index.items(), key=lambda item: item[1][0]):
            if due + self.grace > t:
                break
            row = self.row(partition, skey)
            if row is None:
                index.pop(skey, None)
                continue
            if not closed:  # final now: closed (and on_close called) before any expiry
                self._close(received, skey, row, due)
            if due + self.expires <= t:
                self.put(partition, skey, None)
                index.pop(skey, None)

    def _close(self, received: Received, skey: str, row: Row, due: int) -> None:
        partition = received.partition
        value = self.value(row)
        self.put(partition, skey, Row(None, row.applied, row.end, True, row.start, model=value))
        self.index(partition)[skey] = (due, True)
        WINDOWS_CLOSED.labels(self.name).inc()
        if self.on_close is not None:
            key = skey.rpartition("@")[0]
            start = row.start if row.start is not None else int(skey.rpartition("@")[2])
            result = self.on_close(key, Window(dt(start), dt(row.end or start)), value, received)
            if inspect.isawaitable(result):
                received._pending.append(result)


class WindowedTable(_TimedTable[M]):
    """Tumbling (``hop=None``) or hopping windows of event time per key (see the module doc).
    An event belongs to every window ``[start, start + size)`` containing its time (starts are
    multiples of ``hop``, ``size`` for tumbling windows)."""

    def __init__(
        self,
        name: str,
        model: type[M],
        partitions: int,
        changelog: str,
        *,
        size: timedelta,
        hop: timedelta | None,
        grace: timedelta,
        expires: timedelta,
        on_close: OnClose | None,
        late_topic: EventTopic | None,
        forward: Forward,
    ) -> None:
        super().__init__(
            name,
            model,
            partitions,
            changelog,
            grace=ms_delta(grace),
            expires=ms_delta(expires),
            on_close=on_close,
            late_topic=late_topic,
            forward=forward,
        )
        self.size, self.hop = ms_delta(size), ms_delta(hop or size)
        if self.hop <= 0 or self.hop > self.size or self.size % self.hop:
            raise ConfigError(f"{name}: the hop must divide the window size ({hop} vs {size})")

    @staticmethod
    def stored_key(key: str, start_ms: int) -> str:
        return f"{key}@{start_ms}"

    def windows_for(self, when: datetime) -> list[int]:
        """Start times (ms) of the windows ``when`` belongs to."""
        t = ms(when)
        last = t - t % self.hop
        return [s for s in range(last - self.size + self.hop, last + 1, self.hop) if s <= t < s + self.size]

    def get(self, key: str, start: datetime) -> M | None:
        row = self.row(current_received().partition, self.stored_key(key, ms(start)))
        return None if row is None else self.value(row)

    def update(self, key: str, when: datetime, change: Callable[[M], M]) -> Sent[list[Change[M]]]:
        """Apply ``change`` to each window of ``key`` that ``when`` falls in; then close and expire
        the windows stream time has passed. Returns the applied changes (none for a late event or
        one applied before); awaiting the result runs ``on_close`` coroutines now (otherwise the
        engine runs them after the handler)."""
        received = current_received()
        partition = received.partition
        index = self.index(partition)
        now = self.stream_time(partition)
        changes: list[Change[M]] = []
        starts = self.windows_for(when)
        late = 0
        for start in starts:
            end = start + self.size
            if now is not None and end + self.grace <= now:
                late += 1
                continue
            skey = self.stored_key(key, start)
            row = self.row(partition, skey)
            if not first_application(self.name, self.slot, received, skey, row):
                continue
            before: M = self.model() if row is None else self.value(row)
            after = change(before)
            base = row if row is not None else Row({})
            self.put(partition, skey, base.applied_after(received, after, end=end))
            index[skey] = (end, False)
            changes.append(Change(before, after))
        if late and late == len(starts):
            self._late(received)
        self._advance(received, ms(when))
        return Sent(changes, received._pending)


class SessionTable(_TimedTable[M]):
    """Session windows per key: an event within ``gap`` of a session's events joins it (and
    merges two sessions it bridges, with ``merge(a, b)``); a session closes ``gap + grace`` after
    its last event in stream time. Late: an event whose session would already be closed (as
    Kafka Streams decides). Closed sessions are final: a later event near one starts a new one."""

    def __init__(
        self,
        name: str,
        model: type[M],
        partitions: int,
        changelog: str,
        *,
        gap: timedelta,
        grace: timedelta,
        expires: timedelta,
        merge: Callable[[M, M], M] | None,
        on_close: OnClose | None,
        late_topic: EventTopic | None,
        forward: Forward,
    ) -> None:
        super().__init__(
            name,
            model,
            partitions,
            changelog,
            grace=ms_delta(grace),
            expires=ms_delta(expires),
            on_close=on_close,
            late_topic=late_topic,
            forward=forward,
        )
        self.gap = ms_delta(gap)
        if self.gap <= 0:
            raise ConfigError(f"{name}: a session gap must be positive, not {gap}")
        self.merge = merge

    def _due(self, row: Row) -> int:
        assert row.end is not None
        return row.end + self.gap

    def sessions(self, key: str) -> list[tuple[Window, M]]:
        """The sessions of ``key`` in this partition (open and closed, oldest first)."""
        partition = current_received().partition
        found = []
        for skey in self.index(partition):
            if skey.rpartition("@")[0] == key:
                row = self.row(partition, skey)
                if row is not None and row.start is not None and row.end is not None:
                    found.append((Window(dt(row.start), dt(row.end)), self.value(row)))
        return sorted(found, key=lambda item: item[0].start)

    def update(self, key: str, when: datetime, change: Callable[[M], M]) -> Sent[list[Change[M]]]:
        """Add an event at ``when`` to ``key``'s session (a new one, or one it extends or bridges);
        returns the change (empty for a late event or one applied before)."""
        received = current_received()
        partition = received.partition
        index = self.index(partition)
        now = self.stream_time(partition)
        t = ms(when)
        prefix = f"{key}@"
        near: list[tuple[str, Row]] = []
        for skey, (_due, closed) in index.items():
            if closed or not skey.startswith(prefix) or skey.rpartition("@")[0] != key:
                continue
            row = self.row(partition, skey)
            if row is None or row.start is None or row.end is None:
                continue
            if row.start - self.gap <= t <= row.end + self.gap:
                near.append((skey, row))
        near.sort(key=lambda item: item[1].start or 0)
        start = min([t, *(r.start for _, r in near if r.start is not None)])
        end = max([t, *(r.end for _, r in near if r.end is not None)])
        changes: list[Change[M]] = []
        if now is not None and end + self.gap + self.grace <= now:
            self._late(received)
        else:
            applied: dict[str, int] = {}
            for _, row in near:
                for origin, offset in row.applied.items():
                    applied[origin] = max(offset, applied.get(origin, -1))
            seen = Row({}, applied) if near else None
            if first_application(self.name, self.slot, received, f"{key}@session", seen):
                before = self._merged(key, [self.value(row) for _, row in near])
                after = change(before)
                for skey, _row in near:
                    self.put(partition, skey, None)
                    index.pop(skey, None)
                skey = f"{key}@{start}"
                self.put(
                    partition, skey, Row({}, applied).applied_after(received, after, end=end, start=start)
                )
                index[skey] = (end + self.gap, False)
                changes.append(Change(before, after))
        self._advance(received, t)
        return Sent(changes, received._pending)

    def _merged(self, key: str, values: list[M]) -> M:
        if not values:
            return self.model()
        merged = values[0]
        for other in values[1:]:
            if self.merge is None:
                raise ConfigError(f"{self.name}: an event bridges two sessions of {key!r}; give merge=")
            merged = self.merge(merged, other)
        return merged
