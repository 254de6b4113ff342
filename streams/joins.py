"""Stream-table joins that wait: ``table.lookup(key, missing="wait")`` holds the event until the
row arrives, bounded by :class:`Wait`.

**Head-of-line per partition.** Once an event of partition ``p`` waits, every later event of
``p`` is held behind it, in order, whatever its key: the state's offset dedupe (a key skips an
origin offset at or below the one it stored) needs each origin partition's events applied in
order, as they would have been without the wait. Kafka Streams' stream-table join with a grace
period buffers the same way. When the head's row is written (or the 1 s timer finds it), the
held events run in order until one misses a row again.

**Bounded and durable.** At most ``max_events`` per partition (one more applies ``then`` to the
oldest); each waits at most ``max_wait`` from its arrival. The held records (bytes, headers,
position) live in a changelogged table ``<handler>-waiting``, written with the other state
before the offsets that pass them are committed, so a crash or a rebalance loses none (the next
owner recovers the queue); a replayed record already held (offset at or below the last held one)
is not held twice.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from evstream.errors import ConfigError
from evstream.streams.context import Received, Record, header_pairs
from evstream.streams.metrics import JOIN_MISSING, JOIN_WAIT_EXPIRED, JOIN_WAITING
from evstream.streams.state.records import Row
from evstream.streams.state.tables import Table, TableState

if TYPE_CHECKING:
    from evstream.streams.engine.processor import Processor, Route
    from evstream.streams.topics import EventTopic

__all__ = ["Wait", "WaitThen", "Waiting"]

WaitThen = Literal["emit_without", "skip", "dead_letter"]


@dataclass(frozen=True, slots=True)
class Wait:
    """How long the events of a handler (``app.on(..., wait=Wait(...))``) wait for a missing row
    of a ``lookup(key, missing="wait")``, and what happens then.

    - ``max_wait``: from the event's arrival (wall clock) until ``then`` is applied to it;
    - ``max_events``: events held per partition; one more applies ``then`` to the oldest at once;
    - ``then``: ``"emit_without"`` (the handler runs with the lookup returning None, a left
      join's null), ``"skip"`` (no effect, an inner join's drop) or ``"dead_letter"`` (forwarded
      as it was to ``<app id>-<handler>-unjoined``).
    """

    max_wait: timedelta
    max_events: int = 1000
    then: WaitThen = "emit_without"

    def __post_init__(self) -> None:
        if self.max_events < 1 or self.max_wait <= timedelta(0):
            raise ConfigError(f"Wait needs max_wait > 0 and max_events >= 1, not {self}")


class _Held(BaseModel):
    """(Held events are stored as plain rows; the state's model is never used.)"""


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


@dataclass(slots=True)
class HeldRecord:
    """A held event as stored in ``<handler>-waiting``: the record as read, when it started
    waiting, and the (table, key) of the row it waits for (None: it waits behind another)."""

    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int
    since_ms: int
    table: str | None
    table_key: str | None

    def to_value(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "key": _b64(self.key),
            "value": _b64(self.value),
            "headers": [[k, _b64(v)] for k, v in self.headers],
            "timestamp_ms": self.timestamp_ms,
            "since_ms": self.since_ms,
            "table": self.table,
            "table_key": self.table_key,
        }

    @classmethod
    def from_value(cls, stored: dict[str, Any]) -> HeldRecord:
        return cls(
            int(stored["offset"]),
            _unb64(stored["key"]),
            _unb64(stored["value"]),
            [(name, _unb64(value) or b"") for name, value in stored["headers"]],
            int(stored["timestamp_ms"]),
            int(stored["since_ms"]),
            stored["table"],
            stored["table_key"],
        )

    def waits_for(self) -> tuple[str | None, str | None]:
        return self.table, self.table_key


class HeldTable(TableState[_Held]):
    """The changelogged rows of held events (``<handler>-waiting``); its index is the queues."""

    def __init__(self, name: str, partitions: int, changelog: str, waiting: Waiting) -> None:
        super().__init__(name, _Held, partitions, changelog)
        self.waiting = waiting

    def forget(self, partition: int | None) -> None:
        self.waiting.forget(partition)


class Waiting:
    """The events of one handler held for missing rows, per partition (see the module doc)."""

    def __init__(
        self,
        processor: Processor,
        route: Route,
        wait: Wait,
        *,
        partitions: int,
        changelog: str,
        dead_letter: EventTopic | None,
    ) -> None:
        self.processor, self.route, self.wait = processor, route, wait
        self.name = route.name
        self.state = HeldTable(f"{self.name}-waiting", partitions, changelog, self)
        self.dead_letter = dead_letter
        self.tables = [t for t in route.lookups if isinstance(t, Table)]
        self._queues: dict[int, deque[tuple[str, HeldRecord]]] = {}
        self._draining: dict[int, asyncio.Event] = {}  # partition -> set when its drain ends

    def forget(self, partition: int | None) -> None:
        if partition is None:
            self._queues = {}
        else:
            self._queues.pop(partition, None)

    def queue(self, partition: int) -> deque[tuple[str, HeldRecord]]:
        """The held events of ``partition`` in order (rebuilt from the table when forgotten)."""
        found = self._queues.get(partition)
        if found is None:
            rows = sorted(self.state.partition_rows(partition), key=lambda item: item[0])
            found = self._queues[partition] = deque((k, HeldRecord.from_value(row.value)) for k, row in rows)
        return found

    def holds(self, received: Received) -> bool:
        """True when ``received`` must wait behind held events (or is one of them, replayed)."""
        return bool(self.queue(received.partition))

    def count(self) -> None:
        JOIN_WAITING.labels(self.name).set(sum(len(q) for q in self._queues.values()))

    async def hold(self, received: Received, waits_for: tuple[str, str] | None) -> None:
        """Append ``received`` to its partition's queue (``waits_for``: the head's table and key)."""
        partition = received.partition
        q = self.queue(partition)
        if q and received.offset <= q[-1][1].offset:  # a replay of a held record
            return
        while len(q) >= self.wait.max_events:  # full: the oldest gets ``then`` now
            draining = self._draining.get(partition)
            if draining is not None:  # a drain is shrinking it: wait for its end
                await draining.wait()
            else:
                await self.drain(partition, expire=True)
            q = self.queue(partition)
        if not q and waits_for is None:  # the queue emptied meanwhile: nothing to wait behind
            waits_for = await self.processor.handle(self.route, received)
            if waits_for is None:
                return
        raw = received.raw
        seq = int(q[-1][0].rpartition("#")[2]) + 1 if q else 0
        held = HeldRecord(
            received.offset,
            received.key,
            raw.value(),
            header_pairs(raw),
            received.timestamp_ms,
            int(time.time() * 1000),
            waits_for[0] if waits_for else None,
            waits_for[1] if waits_for else None,
        )
        skey = f"{partition}#{seq:012d}"
        q.append((skey, held))
        self.state.put(partition, skey, Row(held.to_value()))
        if waits_for is not None:
            JOIN_MISSING.labels(waits_for[0], "wait").inc()
        self.count()

    def row_written(self, table: str, key: str) -> None:
        for partition, q in self._queues.items():
            if q and q[0][1].waits_for() == (table, key):
                self.processor.ready.add((self, partition))

    def restore(self, partition: int, held: HeldRecord) -> Received:
        topic = self.route.topic.name
        record = Record(topic, partition, held.offset, held.key, held.value, held.headers, held.timestamp_ms)
        value = record.value()
        assert value is not None  # a held record has its bytes
        received = self.processor.receive(record, self.route.topic.codec.decode(value))
        received._waiting = self
        return received

    async def drain(self, partition: int, *, expire: bool = False) -> None:
        """Run the held events of ``partition`` in order until one misses a row again (``expire``:
        apply ``then`` to the head first). An event leaves the queue only once handled, so the
        partition's new events keep queueing behind it meanwhile."""
        if partition in self._draining:
            return
        self._draining[partition] = asyncio.Event()
        try:
            q = self.queue(partition)
            while q:
                skey, held = q[0]
                received = self.restore(partition, held)
                if expire:
                    await self._expire(received)
                    expire = False
                else:
                    waits_for = await self.processor.handle(self.route, received)
                    if waits_for is not None:  # the head misses a row (again): it waits on
                        if held.waits_for() != waits_for:
                            held.table, held.table_key = waits_for
                            self.state.put(partition, skey, Row(held.to_value()))
                            JOIN_MISSING.labels(waits_for[0], "wait").inc()
                        return
                q.popleft()
                self.state.put(partition, skey, None)
        finally:
            self._draining.pop(partition).set()
            self.count()

    async def _expire(self, received: Received) -> None:
        then = self.wait.then
        JOIN_WAIT_EXPIRED.labels(self.name, then).inc()
        if then == "emit_without":
            received._expired = True
            await self.processor.handle(self.route, received)
        elif then == "dead_letter":
            assert self.dead_letter is not None
            self.processor.forward(received, self.dead_letter)

    async def tick(self, partitions: Iterable[int], now_ms: float | None = None) -> None:
        """Per owned partition: expire a head that waited ``max_wait``, release one whose row is
        there now (written by another worker before this one recovered the table)."""
        now = time.time() * 1000 if now_ms is None else now_ms
        limit = self.wait.max_wait.total_seconds() * 1000
        for partition in partitions:
            q = self.queue(partition)
            while q and partition not in self._draining and now - q[0][1].since_ms >= limit:
                await self.drain(partition, expire=True)  # and the ones behind it that find rows
            if not q or partition in self._draining:
                continue
            head = q[0][1]
            table = next((t for t in self.tables if t.name == head.table), None)
            if (
                table is not None
                and head.table_key is not None
                and self._row_exists(table, partition, head.table_key)
            ):
                await self.drain(partition)
        self.count()  # queues recovered after a restart or rebalance are counted from here

    @staticmethod
    def _row_exists(table: Table[Any], partition: int, key: str) -> bool:
        return partition in table.stores and table.row(partition, key) is not None
