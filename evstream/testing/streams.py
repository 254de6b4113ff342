"""Test stream apps without Kafka: an :class:`~evstream.streams.App`'s handlers, tables, windows,
waits and publishes run on in-memory records through the engine's own processor.

:class:`StreamHarness` encodes events with evstream's codec (Confluent-framed Avro on an
:class:`~evstream.testing.InMemorySchemaStore` unless given another store), feeds them to the
same :class:`~evstream.streams.engine.processor.Processor` the worker runs, and keeps what the
app writes per topic. Records written to a topic the app reads (``group_by``, ``forward``) are
fed back to it, as Kafka would. Tables live in memory stores; :meth:`StreamHarness.commit` does
what a worker's commit does to them (the changelog rows, then the stores), :meth:`crash` drops
the rows since the last commit, so a test can replay records and check the apply-once rule.

.. code-block:: python

    with StreamHarness(app) as h:
        h.send(OrderPlaced(...), topic="orders")
        assert h.events("customer-tiers")[0].tier == "bronze"
        assert h.table(totals)["c-1"].orders == 1
"""

from __future__ import annotations

import asyncio
import time
import uuid
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self, TypeVar

from pydantic import BaseModel

from evstream.errors import ConfigError
from evstream.schemas import AvroCodec, Envelope, Event, SchemaStore
from evstream.streams.app import App
from evstream.streams.context import Record
from evstream.streams.state.records import Row
from evstream.streams.state.stores import MemoryStore
from evstream.streams.state.tables import Table, TableState
from evstream.streams.topics import StreamCodec
from evstream.testing.harness import InMemorySchemaStore

__all__ = ["StreamHarness", "Written"]

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Written:
    """A record the app wrote (a derived event, a forward, a dead letter, a changelog row)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode()
        return None

    @property
    def envelope(self) -> Envelope:
        return Envelope.from_headers(self.headers)


class StreamHarness:
    """Run ``app`` on in-memory records (see the module doc). No I/O, no threads."""

    def __init__(self, app: App, *, schema_store: SchemaStore | None = None) -> None:
        self.app = app
        self.schema_store = schema_store or InMemorySchemaStore()
        self.codec = AvroCodec(self.schema_store)
        app.use_codec(self.codec)
        self.written: dict[str, list[Written]] = {}
        self.changelogs: dict[str, list[tuple[str, Row | None]]] = {}
        self._offsets: dict[tuple[str, int], int] = {}
        self._feedback: deque[Record] = deque()
        self._loop = asyncio.new_event_loop()

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> Self:
        for table in self.app.tables:
            for partition in range(table.partitions):
                table.stores.setdefault(partition, MemoryStore())
        self.app.processor.outputs = self
        return self

    def close(self) -> None:
        self.app.processor.outputs = None
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- input --------------------------------------------------------------------------------------

    def _partitions(self, topic: str) -> int:
        declared = self.app.topics.get(topic)
        if declared is not None and declared.partitions:
            return declared.partitions
        routes = self.app.processor.by_topic.get(topic, [])
        counts = [t.partitions for r in routes for t in r.tables()]
        return max(counts, default=self.app.settings.partitions)

    def _partition_for(self, topic: str, key: bytes | None) -> int:
        return 0 if key is None else zlib.crc32(key) % self._partitions(topic)

    def _next_offset(self, topic: str, partition: int) -> int:
        offset = self._offsets.get((topic, partition), 0)
        self._offsets[(topic, partition)] = offset + 1
        return offset

    def record(
        self,
        event: Event,
        *,
        topic: str | None = None,
        key: str | None = None,
        partition: int | None = None,
        at: datetime | None = None,
    ) -> Record:
        """``event`` as the record a producer would write (envelope headers, Avro value)."""
        name = topic or type(event).topic
        if not name:
            raise ConfigError(f"{type(event).__name__} has no topic: give topic=")
        value = StreamCodec(name, self.codec, self.app.catalog).encode(event)
        key_bytes = (key if key is not None else event.aggregate_id()).encode()
        envelope = Envelope(event_type=type(event).event_type(), event_id=uuid.uuid4(), source="harness")
        headers = [(k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in envelope.to_headers()]
        where = partition if partition is not None else self._partition_for(name, key_bytes)
        stamp = int((at.timestamp() if at is not None else time.time()) * 1000)
        return Record(name, where, self._next_offset(name, where), key_bytes, value, headers, stamp)

    def send(
        self,
        event: Event,
        *,
        topic: str | None = None,
        key: str | None = None,
        partition: int | None = None,
        at: datetime | None = None,
    ) -> Record:
        """Write ``event`` to ``topic`` (its own by default) and process it, with everything it
        causes on the app's own topics; returns the record."""
        record = self.record(event, topic=topic, key=key, partition=partition, at=at)
        self.deliver([record])
        return record

    def send_raw(
        self, topic: str, value: bytes | None, *, key: bytes | None = None, partition: int = 0
    ) -> Record:
        """Write arbitrary bytes (e.g. an undecodable record) and process them."""
        record = Record(
            topic, partition, self._next_offset(topic, partition), key, value, [], int(time.time() * 1000)
        )
        self.deliver([record])
        return record

    def deliver(self, records: Sequence[Record]) -> None:
        """Process ``records`` as read (again, for a replay after :meth:`crash`), then what they
        wrote to topics the app reads."""
        self._loop.run_until_complete(self.app.processor.process(records))
        while self._feedback:
            self._loop.run_until_complete(self.app.processor.process([self._feedback.popleft()]))

    def tick(self, now: datetime | None = None) -> None:
        """What the worker's 1 s timer does (held events: expiry at ``now``, release)."""
        now_ms = None if now is None else now.timestamp() * 1000
        self._loop.run_until_complete(self.app.processor.tick(now_ms))
        while self._feedback:
            self._loop.run_until_complete(self.app.processor.process([self._feedback.popleft()]))

    # -- the Outputs the processor writes to -----------------------------------------------------------

    def produce(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        partition = self._partition_for(topic, key)
        written = Written(topic, partition, self._next_offset(topic, partition), key, value, headers)
        self.written.setdefault(topic, []).append(written)
        if topic in self.app.processor.by_topic:
            self._feedback.append(
                Record(topic, partition, written.offset, key, value, headers, int(time.time() * 1000))
            )

    # -- commits ------------------------------------------------------------------------------------

    def commit(self) -> None:
        """A worker's commit: pending rows written to the changelogs, then to the stores."""
        for table in self.app.tables:
            for partition, rows in table.take_dirty().items():
                log = self.changelogs.setdefault(table.changelog, [])
                log.extend(rows.items())
                table.stores[partition].apply(rows, len(log))

    def crash(self) -> None:
        """A worker killed before its commit: the rows since the last commit are gone."""
        for table in self.app.tables:
            table.discard()
        self.app.processor.ready.clear()

    # -- what the app did -------------------------------------------------------------------------------

    def events(self, topic: str) -> list[Event]:
        """The events written to ``topic``, decoded."""
        codec = StreamCodec(topic, self.codec, self.app.catalog)
        return [codec.decode(w.value) for w in self.written.get(topic, []) if w.value is not None]

    def dead_letters(self) -> list[Written]:
        return self.written.get(self.app.processor.dead_letter_topic, [])

    def table(self, table: Table[M] | TableState[M]) -> dict[str, M]:
        """Every row of ``table`` (pending ones included), by key."""
        return {
            key: table.value(row)
            for partition in sorted(table.stores)
            for key, row in table.partition_rows(partition)
            if not key.startswith("__")
        }

    def rows(self, table: TableState[Any]) -> dict[str, Row]:
        """The stored rows of ``table`` as typed records (values, applied offsets, window bounds)."""
        return {
            key: row for partition in sorted(table.stores) for key, row in table.partition_rows(partition)
        }
