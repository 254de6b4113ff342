"""Dead-letter tools: list and show dead letters (redrive: :mod:`evstream.consumers.replay.redrives`).

A dead letter from a foreign producer carries no ``ce_*`` headers: its event id is the one the
consumer derived from its original position (:func:`evstream.schemas.derived_event_id`), and
``evstream dlq show`` names its type by the writer schema's record name. The dead-letter topic
``<topic>.dlq`` is shared by every consumer group reading ``<topic>``; each dead letter names the
group that failed it (``evstream.dlq.group``; empty in dead letters written before that header).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from evstream.consumers.failures import (
    DLQ_PREFIX,
    RETRY_PREFIX,
    Headers,
    Origin,
    header_pairs,
    origin_headers,
    redrive_topic,
)
from evstream.consumers.replay.cluster import Cluster
from evstream.errors import ReplayError
from evstream.schemas import derived_event_id
from evstream.settings import KafkaSettings, librdkafka_config

__all__ = ["REDRIVE_COUNT", "DeadLetterRecord", "matching", "read_dead_letters", "read_range"]

REDRIVE_COUNT = "evstream.redrive.count"


@dataclass(frozen=True)
class DeadLetterRecord:
    """One record of a dead-letter topic, with its ``evstream.dlq.*`` headers read out."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def header(self, name: str, default: str = "") -> str:
        return next((v.decode(errors="replace") for k, v in self.headers if k == name), default)

    @property
    def event_type(self) -> str:
        return self.header("ce_type", "?")

    @property
    def event_id(self) -> str:
        """``ce_id``; for a record without one, the id derived from its original position."""
        found = self.header("ce_id")
        if found:
            return found
        topic, partition, offset = (self.header(f"{DLQ_PREFIX}{n}") for n in ("topic", "partition", "offset"))
        if topic and partition.isdigit() and offset.isdigit():
            return str(derived_event_id(topic, int(partition), int(offset)))
        return "?"

    @property
    def origin(self) -> str:
        """``topic[partition]@offset`` of the record that failed, or '' if not an evstream dead letter."""
        topic = self.header(f"{DLQ_PREFIX}topic")
        if not topic:
            return ""
        return f"{topic}[{self.header(f'{DLQ_PREFIX}partition')}]@{self.header(f'{DLQ_PREFIX}offset')}"

    @property
    def error_type(self) -> str:
        return self.header(f"{DLQ_PREFIX}error-type")

    @property
    def group(self) -> str:
        """The consumer group that dead-lettered it ('' for a dead letter older than the header)."""
        return self.header(f"{DLQ_PREFIX}group")

    def redrive_target(self, to_topic: str | None = None) -> str | None:
        """``to_topic`` when chosen, else the failing group's ``<topic>.<group>.redrive``; None when
        the record names no group (an older dead letter) or no original topic."""
        if to_topic:
            return to_topic
        source = self.header(f"{DLQ_PREFIX}topic")
        return redrive_topic(source, self.group) if source and self.group else None

    def redrive_headers(self) -> Headers:
        """The copy's headers: the original ones, the origin (``evstream.retry.*``, tier 0, attempts
        counted again from 0) and ``evstream.redrive.count`` one higher."""
        kept = [
            (k, v)
            for k, v in self.headers
            if not k.startswith((DLQ_PREFIX, RETRY_PREFIX)) and k != REDRIVE_COUNT
        ]
        meta = {
            k[len(DLQ_PREFIX) :]: v.decode(errors="replace")
            for k, v in self.headers
            if k.startswith(DLQ_PREFIX)
        }
        try:
            origin = Origin(
                topic=meta["topic"],
                partition=int(meta["partition"]),
                offset=int(meta["offset"]),
                timestamp_ms=int(meta["timestamp"]),
                first_failure=datetime.fromisoformat(
                    meta.get("first-failure-at") or datetime.now(UTC).isoformat()
                ),
            )
        except (KeyError, ValueError):
            origin = None  # damaged dlq headers: the copy is read with its own coordinates
        return [
            *kept,
            *(origin_headers(origin) if origin else []),
            (REDRIVE_COUNT, str(self.redrive_count + 1).encode()),
        ]

    @property
    def redrive_count(self) -> int:
        text = self.header(REDRIVE_COUNT, "0")
        return int(text) if text.isdigit() else 0

    def summary(self) -> dict[str, object]:
        return {
            "partition": self.partition,
            "offset": self.offset,
            "event_type": self.event_type,
            "event_id": self.event_id,
            "origin": self.origin,
            "group": self.group,
            "reason": self.header(f"{DLQ_PREFIX}reason"),
            "error_type": self.error_type,
            "error_message": self.header(f"{DLQ_PREFIX}error-message"),
            "attempts": self.header(f"{DLQ_PREFIX}attempts"),
            "dead_lettered_at": self.header(f"{DLQ_PREFIX}dead-lettered-at"),
            "redrive_count": self.redrive_count,
        }


def _record(msg: Message) -> DeadLetterRecord:
    key = msg.key()
    return DeadLetterRecord(
        msg.partition() or 0,
        msg.offset() or 0,
        key.encode() if isinstance(key, str) else key,
        msg.value(),
        header_pairs(msg),
    )


def read_dead_letters(
    kafka: KafkaSettings,
    dlq: str,
    *,
    error_type: str | None = None,
    group: str | None = None,
    limit: int | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> list[DeadLetterRecord]:
    """The dead letters in ``dlq`` up to its current end (oldest first), optionally filtered by
    error type and by the group that failed them."""
    keep = matching(error_type, group)
    records, _examined, _seen = read_range(kafka, dlq, None, keep, limit, partition, offset)
    return records


def matching(error_type: str | None, group: str | None) -> Callable[[DeadLetterRecord], bool]:
    return lambda r: (
        (error_type is None or r.error_type == error_type) and (group is None or r.group == group)
    )


def read_range(
    kafka: KafkaSettings,
    dlq: str,
    group_id: str | None,
    keep: Callable[[DeadLetterRecord], bool],
    limit: int | None,
    partition: int | None = None,
    offset: int | None = None,
    stops: dict[int, int] | None = None,
) -> tuple[list[DeadLetterRecord], dict[tuple[str, int], int], int]:
    """Matching records from the start position (``group_id``'s committed offsets, else the
    earliest, else ``offset``) up to the end; and, per partition, the offset after the last
    record examined."""
    conf = librdkafka_config(kafka)
    cluster = Cluster(AdminClient(conf))
    keys = [(dlq, p) for p in cluster.partitions(dlq) if partition is None or p == partition]
    if not keys:
        raise ReplayError(f"{dlq} has no partition {partition}")
    earliest, end = cluster.earliest(keys), cluster.latest(keys)
    starts = {k: earliest[k] if offset is None else max(offset, earliest[k]) for k in keys}
    if stops is not None:  # read no further than these offsets (exclusive)
        end = {k: min(end[k], stops.get(k[1], 0)) for k in keys}
    consumer = Consumer(
        {
            **conf,
            "group.id": group_id or f"evstream-dlq-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,  # the position is committed only after acknowledged copies
        }
    )
    found: list[DeadLetterRecord] = []
    examined: dict[tuple[str, int], int] = {}
    seen = 0
    try:
        if group_id is not None:
            for tp in consumer.committed([TopicPartition(*k) for k in keys], timeout=30):
                if tp.offset >= 0:
                    starts[(tp.topic, tp.partition)] = max(tp.offset, earliest[(tp.topic, tp.partition)])
        work = {k: end[k] for k in keys if starts[k] < end[k]}
        if work:
            consumer.assign([TopicPartition(t, p, starts[(t, p)]) for t, p in work])
            seen = _scan(consumer, dlq, work, found, examined, keep, limit)
    finally:
        consumer.close()
    found.sort(key=lambda r: (r.offset, r.partition))
    return found, examined, seen


def _scan(
    consumer: Consumer,
    dlq: str,
    work: dict[tuple[str, int], int],
    found: list[DeadLetterRecord],
    examined: dict[tuple[str, int], int],
    keep: Callable[[DeadLetterRecord], bool],
    limit: int | None,
) -> int:
    """Read the assigned partitions up to their ``work`` end offsets, collecting matching records;
    returns how many records were examined."""
    idle = seen = 0
    while work and (limit is None or len(found) < limit) and idle < 60:
        batch = consumer.consume(500, 0.5)
        idle = 0 if batch else idle + 1
        for msg in batch:
            if limit is not None and len(found) >= limit:
                break
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    raise ReplayError(f"reading {dlq}: {err.str()}")
                continue
            key = (dlq, msg.partition() or 0)
            if key not in work or (msg.offset() or 0) >= work[key]:
                continue
            record = _record(msg)
            seen += 1
            examined[key] = record.offset + 1
            if keep(record):
                found.append(record)
        for tp in consumer.position([TopicPartition(*k) for k in work]):
            if tp.offset >= work[(tp.topic, tp.partition)]:
                del work[(tp.topic, tp.partition)]
    return seen
