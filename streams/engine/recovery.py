"""The app's own topics, and table partitions recovered from their changelogs.

Recovery runs when partitions are assigned, before their first record: each table partition the
new partitions need is opened (``memory://`` empty, ``rocksdb://`` with the files and checkpoint
a previous worker left) and the changelog is read ``read_committed`` from the store's offset to
its end. Progress is ``evstream_stream_recovery_remaining{topic,partition}``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from evstream.errors import EvstreamError
from evstream.streams.metrics import RECOVERY_REMAINING
from evstream.streams.state.records import Row, decode_key
from evstream.streams.state.stores import open_store
from evstream.streams.state.tables import TableState

__all__ = ["Recovery", "create_topics"]

log = logging.getLogger("evstream.streams")

APPLY_EVERY = 5000  # rows per store write while recovering


def create_topics(
    admin: AdminClient, wanted: dict[str, tuple[int, dict[str, str]]], replication: int
) -> None:
    """Create the app's topics that do not exist yet (``name -> (partitions, config)``)."""
    existing = admin.list_topics(timeout=30).topics
    missing = [
        NewTopic(name, partitions, replication, config=config)
        for name, (partitions, config) in wanted.items()
        if name not in existing
    ]
    if not missing:
        return
    for name, future in admin.create_topics(missing, operation_timeout=30, request_timeout=30).items():
        try:
            future.result()
        except Exception as exc:
            error = exc.args[0] if exc.args else None
            if not (isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                raise EvstreamError(f"could not create the app's topic {name}: {exc}") from exc
    log.info("created topics %s", sorted(t.topic for t in missing))


def watermarks(consumer: Consumer, tp: TopicPartition, timeout_s: float = 30.0) -> tuple[int, int]:
    """(low, high) of ``tp``, asked again while the cluster answers with a retriable error (a topic
    just created has no leader for a moment)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=max(1.0, deadline - time.monotonic()))
            return low, high
        except KafkaException as exc:
            if (
                not exc.args[0].retriable() and exc.args[0].code() not in _NOT_READY
            ) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


_NOT_READY = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
)


class Recovery:
    """Opens and recovers table partitions with one restore consumer (no group, no commits)."""

    def __init__(self, conf: dict[str, Any], store: str, data_dir: Path, timeout_s: float = 600.0) -> None:
        self.conf = {
            **conf,
            "group.id": "evstream-restore",  # never joined, never committed: assign() only
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
        self.store = store
        self.data_dir = data_dir
        self.timeout_s = timeout_s
        self.active = False
        self._consumer: Consumer | None = None

    def consumer(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(self.conf)
        return self._consumer

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def recover(self, needed: list[tuple[TableState[Any], int]]) -> int:
        """Open and recover each (table, partition) not open yet; returns the rows read."""
        todo = []
        for table, partition in needed:
            if partition not in table.stores:
                table.stores[partition] = open_store(self.store, self.data_dir, table.name, partition)
            table.forget(partition)
            todo.append((table, partition))
        if not todo:
            return 0
        self.active = True
        try:
            return self._read(todo)
        finally:
            self.active = False

    def _plan(
        self, todo: list[tuple[TableState[Any], int]]
    ) -> dict[tuple[str, int], tuple[TableState[Any], int, int]]:
        """(changelog, partition) -> (table, start, end) of what is left to read."""
        consumer = self.consumer()
        plan = {}
        for table, partition in todo:
            store = table.stores[partition]
            low, high = watermarks(consumer, TopicPartition(table.changelog, partition))
            if store.changelog_offset > high:  # the changelog was recreated: the files are stale
                log.warning("%s[%d]: store ahead of its changelog; rebuilding it", table.changelog, partition)
                store.wipe()
            start = max(store.changelog_offset, low)
            RECOVERY_REMAINING.labels(table.changelog, str(partition)).set(max(0, high - start))
            if start < high:
                plan[(table.changelog, partition)] = (table, start, high)
        return plan

    def _read(self, todo: list[tuple[TableState[Any], int]]) -> int:
        started = time.monotonic()
        plan = self._plan(todo)
        if not plan:
            log.info("recovered 0 changelog rows: %d table partitions up to date", len(todo))
            return 0
        consumer = self.consumer()
        consumer.assign([TopicPartition(t, p, start) for (t, p), (_table, start, _end) in plan.items()])
        remaining = set(plan)
        read = 0
        try:
            while remaining:
                if time.monotonic() - started > self.timeout_s:
                    raise EvstreamError(
                        f"tables not recovered within {self.timeout_s:g} s: {sorted(remaining)} not read"
                    )
                read += self._apply(consumer.consume(APPLY_EVERY, 0.5), plan, remaining)
        finally:
            consumer.unassign()
        for topic, partition in plan:
            RECOVERY_REMAINING.labels(topic, str(partition)).set(0)
        elapsed = time.monotonic() - started
        log.info("recovered %d changelog rows of %d partitions in %.1f s", read, len(plan), elapsed)
        return read

    @staticmethod
    def _apply(
        messages: list[Any],
        plan: dict[tuple[str, int], tuple[TableState[Any], int, int]],
        remaining: set[tuple[str, int]],
    ) -> int:
        """Apply one batch of changelog records to their stores; returns how many."""
        batches: dict[tuple[str, int], dict[str, Row | None]] = {}
        nexts: dict[tuple[str, int], int] = {}
        for msg in messages:
            where = (msg.topic() or "", msg.partition() or 0)
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    raise EvstreamError(f"recovering {where[0]}[{where[1]}]: {err.str()}")
                remaining.discard(where)
                continue
            value = msg.value()
            batches.setdefault(where, {})[decode_key(msg.key())] = (
                None if value is None else Row.from_bytes(value)
            )
            nexts[where] = (msg.offset() or 0) + 1
            if nexts[where] >= plan[where][2]:
                remaining.discard(where)
        for where, rows in batches.items():
            table, _start, end = plan[where]
            table.stores[where[1]].apply(rows, nexts[where])
            left = 0 if where not in remaining else max(0, end - nexts[where])
            RECOVERY_REMAINING.labels(where[0], str(where[1])).set(left)
        return sum(len(rows) for rows in batches.values())
