"""Dead-letter tools: list and show dead letters, and redrive them to the topic they came from.

A dead letter from a foreign producer carries no ``ce_*`` headers: its event id is the one the
consumer derived from its original position (:func:`evstream.schemas.derived_event_id`), and
``evstream dlq show`` names its type by the writer schema's record name.

Redrive copies each selected record back to its original topic (``evstream.dlq.topic``) with its
original key, value and headers and an ``evstream.redrive.count`` header one higher than before.
A record whose count already reached ``max_redrives`` is refused (the loop guard: a record that
keeps failing cannot cycle forever). The dead-letter topic itself is never changed (it is the
audit log); redrive remembers how far it got in the consumer group ``evstream-redrive.<dlq>``,
so each run works on the dead letters that arrived since the last one. Records a filter passes
over are not revisited unless ``from_beginning`` (``--from-beginning``) is given.

A *selected* redrive (``only``: the ``(partition, offset)`` of chosen dead letters, ``--offset P:O``)
sends exactly those records, with the same loop guard, dry run and redrive count, and does not move
the position at all: records it did not choose stay where a later filtered redrive finds them, and
so do the chosen ones (a later filtered run reaching them sends them again, with the same event id,
which a consumer with a dedupe store handles once).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from evstream.consumers.failures import DLQ_PREFIX, RETRY_PREFIX, header_pairs
from evstream.consumers.replay.cluster import Cluster
from evstream.errors import ReplayError, ReplayInputError
from evstream.schemas import derived_event_id
from evstream.settings import KafkaSettings, librdkafka_config

__all__ = ["REDRIVE_COUNT", "DeadLetterRecord", "RedriveResult", "read_dead_letters", "redrive"]

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
    limit: int | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> list[DeadLetterRecord]:
    """The dead letters in ``dlq`` up to its current end (oldest first), optionally filtered."""
    records, _examined, _seen = _read(kafka, dlq, None, _by_type(error_type), limit, partition, offset)
    return records


def _by_type(error_type: str | None) -> Callable[[DeadLetterRecord], bool]:
    return lambda r: error_type is None or r.error_type == error_type


def _read(
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


@dataclass
class RedriveResult:
    """What :func:`redrive` did (or would do, on a dry run)."""

    dry_run: bool
    passed_over: int = 0  # examined but not matching the filter
    sent: Counter[str] = field(default_factory=Counter)  # by original topic
    refused: list[tuple[DeadLetterRecord, str]] = field(default_factory=list)  # record, why
    redriven: list[DeadLetterRecord] = field(default_factory=list)  # sent (or would be, dry run)

    @property
    def total_sent(self) -> int:
        return sum(self.sent.values())


def redrive(
    kafka: KafkaSettings,
    dlq: str,
    *,
    error_type: str | None = None,
    limit: int | None = None,
    max_redrives: int = 3,
    dry_run: bool = False,
    from_beginning: bool = False,
    only: Iterable[tuple[int, int]] | None = None,
) -> RedriveResult:
    """Send dead letters back to their original topics (acknowledged); see the module docstring.

    ``only``: exactly these dead letters, by ``(partition, offset)`` in ``dlq`` (not combined with
    ``error_type``, ``limit`` or ``from_beginning``); the position is then left as it is.
    """
    group_id = f"evstream-redrive.{dlq}"
    if only is not None:
        if error_type is not None or limit is not None or from_beginning:
            raise ReplayInputError("a selected redrive takes no --error-type, --limit or --from-beginning")
        records = _selected(kafka, dlq, set(only))
        examined: dict[tuple[str, int], int] = {}  # the position is not moved
        seen = len(records)
    else:
        records, examined, seen = _read(
            kafka, dlq, None if from_beginning else group_id, _by_type(error_type), limit
        )
    result = RedriveResult(dry_run, passed_over=seen - len(records))
    conf = librdkafka_config(kafka)
    producer = (
        None
        if dry_run
        else Producer(
            {
                **conf,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "partitioner": "murmur2_random",
            }
        )
    )
    failures: list[str] = []
    for record in records:
        target = record.header(f"{DLQ_PREFIX}topic")
        if not target:
            result.refused.append((record, "no evstream.dlq.topic header: not an evstream dead letter"))
            continue
        if record.redrive_count >= max_redrives:
            result.refused.append(
                (record, f"redriven {record.redrive_count} times already (max {max_redrives})")
            )
            continue
        result.sent[target] += 1
        result.redriven.append(record)
        if producer is None:
            continue
        headers = [
            (k, v)
            for k, v in record.headers
            if not k.startswith((DLQ_PREFIX, RETRY_PREFIX)) and k != REDRIVE_COUNT
        ]
        producer.produce(
            target,
            value=record.value,
            key=record.key,
            headers=[*headers, (REDRIVE_COUNT, str(record.redrive_count + 1).encode())],
            on_delivery=lambda err, _m: failures.append(err.str()) if err is not None else None,
        )
        producer.poll(0)
    if producer is None:
        return result
    left = producer.flush(60)
    if left or failures:  # nothing committed: the next run retries these records
        raise ReplayError(
            f"redrive of {dlq}: {left} not acknowledged, {len(failures)} failed"
            + (f" (first: {failures[0]})" if failures else "")
        )
    if examined:  # remember how far this run got (only after every copy was acknowledged)
        position = Consumer({**conf, "group.id": group_id, "enable.auto.commit": False})
        try:
            position.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in examined.items()], asynchronous=False
            )
        finally:
            position.close()
    return result


def _at(offsets: frozenset[int]) -> Callable[[DeadLetterRecord], bool]:
    return lambda r: r.offset in offsets


def _selected(kafka: KafkaSettings, dlq: str, wanted: set[tuple[int, int]]) -> list[DeadLetterRecord]:
    """The dead letters at exactly these ``(partition, offset)``s; one missing is an error."""
    if not wanted:
        raise ReplayInputError("select at least one dead letter")
    found: list[DeadLetterRecord] = []
    for partition in sorted({p for p, _ in wanted}):
        offsets = frozenset(o for p, o in wanted if p == partition)
        stops = {partition: max(offsets) + 1}
        found += _read(kafka, dlq, None, _at(offsets), None, partition, min(offsets), stops)[0]
    missing = wanted - {(r.partition, r.offset) for r in found}
    if missing:
        where = ", ".join(f"{dlq}[{p}]@{o}" for p, o in sorted(missing))
        raise ReplayInputError(f"no dead letter at {where} (removed by retention, or never there)")
    return sorted(found, key=lambda r: (r.partition, r.offset))
