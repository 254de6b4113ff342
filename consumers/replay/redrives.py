"""Dead-letter redrive: back to the consumer group that failed each record, and to it only.

The dead-letter topic ``<topic>.dlq`` is shared by every group reading ``<topic>`` (one topic per
source to declare, browse and alert on), and each dead letter names the group that failed it
(``evstream.dlq.group``). Redrive copies each selected record to **that group's** redrive topic
``<topic>.<group>.redrive``, read by that group's runner only (the shared source topic would reach
every group again, also those that handled the event), with its original key, value and headers,
its origin in ``evstream.retry.*`` headers (tier 0: a new failure is dead-lettered with the
original coordinates) and an ``evstream.redrive.count`` header one higher than before. A missing
redrive topic refuses the whole run, nothing sent (topics are declared as code). A dead letter
written before records named their group goes only to a topic chosen explicitly (``to_topic``,
``--to-topic``); otherwise the run is refused.

A record whose count already reached ``max_redrives`` is refused (the loop guard: a record that
keeps failing cannot cycle forever). The dead-letter topic itself is never changed (it is the
audit log); redrive remembers how far it got in the consumer group ``evstream-redrive.<dlq>``
(``evstream-redrive.<dlq>.<group>`` for a redrive of one ``group``'s dead letters), so each run
works on the dead letters that arrived since the last one. Records a filter passes over are not
revisited unless ``from_beginning`` (``--from-beginning``) is given.

A *selected* redrive (``only``: the ``(partition, offset)`` of chosen dead letters, ``--offset P:O``)
sends exactly those records, with the same loop guard, dry run and redrive count, and does not move
the position at all: records it did not choose stay where a later filtered redrive finds them, and
so do the chosen ones (a later filtered run reaching them sends them again, with the same event id,
which a consumer with a dedupe store handles once).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from evstream.consumers.failures import DLQ_PREFIX
from evstream.consumers.replay.cluster import Cluster
from evstream.consumers.replay.deadletters import DeadLetterRecord, matching, read_range
from evstream.errors import ReplayError, ReplayInputError
from evstream.settings import KafkaSettings, librdkafka_config

__all__ = ["RedriveResult", "check_targets", "redrive"]


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
    group: str | None = None,
    to_topic: str | None = None,
    limit: int | None = None,
    max_redrives: int = 3,
    dry_run: bool = False,
    from_beginning: bool = False,
    only: Iterable[tuple[int, int]] | None = None,
) -> RedriveResult:
    """Send dead letters back to the groups that failed them (acknowledged); see the module docstring.

    ``group``: only that group's dead letters (its own position, ``evstream-redrive.<dlq>.<group>``).
    ``to_topic``: send every selected record there instead (the explicit choice that dead letters
    without ``evstream.dlq.group`` need). ``only``: exactly these dead letters, by ``(partition,
    offset)`` in ``dlq`` (not combined with ``error_type``, ``group``, ``limit`` or
    ``from_beginning``); the position is then left as it is. Refused with
    :class:`ReplayInputError`, before anything is sent: a dead letter that names no group without
    ``to_topic``, or a target topic that does not exist.
    """
    position_group = f"evstream-redrive.{dlq}" + (f".{group}" if group else "")
    if only is not None:
        if error_type is not None or group is not None or limit is not None or from_beginning:
            raise ReplayInputError(
                "a selected redrive takes no --error-type, --group, --limit or --from-beginning"
            )
        records = _selected(kafka, dlq, set(only))
        examined: dict[tuple[str, int], int] = {}  # the position is not moved
        seen = len(records)
    else:
        records, examined, seen = read_range(
            kafka, dlq, None if from_beginning else position_group, matching(error_type, group), limit
        )
    result = RedriveResult(dry_run, passed_over=seen - len(records))
    targets, ungrouped = _choose(records, to_topic, max_redrives, result.refused)
    conf = librdkafka_config(kafka)
    wanted = {t for _, t in targets}
    existing = Cluster(AdminClient(conf)).existing(wanted) if wanted and not ungrouped else set()
    check_targets(dlq, ungrouped, wanted, existing)
    for record, target in targets:
        result.sent[target] += 1
        result.redriven.append(record)
    if not dry_run:
        _send(conf, dlq, targets)
        if examined:  # remember how far this run got (only after every copy was acknowledged)
            position = Consumer({**conf, "group.id": position_group, "enable.auto.commit": False})
            try:
                position.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in examined.items()], asynchronous=False
                )
            finally:
                position.close()
    return result


def _choose(
    records: list[DeadLetterRecord],
    to_topic: str | None,
    max_redrives: int,
    refused: list[tuple[DeadLetterRecord, str]],
) -> tuple[list[tuple[DeadLetterRecord, str]], list[DeadLetterRecord]]:
    """Each record's target topic; those refused (not a dead letter, loop guard) go to ``refused``;
    also returns the records that name no group (without ``to_topic``: no target)."""
    targets: list[tuple[DeadLetterRecord, str]] = []
    ungrouped: list[DeadLetterRecord] = []
    for record in records:
        target = record.redrive_target(to_topic)
        if not record.header(f"{DLQ_PREFIX}topic"):
            refused.append((record, "no evstream.dlq.topic header: not an evstream dead letter"))
        elif record.redrive_count >= max_redrives:
            refused.append((record, f"redriven {record.redrive_count} times already (max {max_redrives})"))
        elif target is None:
            ungrouped.append(record)
        else:
            targets.append((record, target))
    return targets, ungrouped


def _send(conf: dict[str, Any], dlq: str, targets: list[tuple[DeadLetterRecord, str]]) -> None:
    """Produce the copies and wait for every acknowledgement (:class:`ReplayError` otherwise)."""
    producer = Producer(
        {**conf, "acks": "all", "enable.idempotence": True, "linger.ms": 5, "partitioner": "murmur2_random"}
    )
    failures: list[str] = []
    for record, target in targets:
        producer.produce(
            target,
            value=record.value,
            key=record.key,
            headers=record.redrive_headers(),
            on_delivery=lambda err, _m: failures.append(err.str()) if err is not None else None,
        )
        producer.poll(0)
    left = producer.flush(60)
    if left or failures:  # nothing committed: the next run retries these records
        raise ReplayError(
            f"redrive of {dlq}: {left} not acknowledged, {len(failures)} failed"
            + (f" (first: {failures[0]})" if failures else "")
        )


def check_targets(dlq: str, ungrouped: list[DeadLetterRecord], targets: set[str], existing: set[str]) -> None:
    """Refuse a redrive (one line, nothing sent) with dead letters that name no group, or with
    a target topic that does not exist (topics are declared as code, never auto-created)."""
    if ungrouped:
        first = ungrouped[0]
        raise ReplayInputError(
            f"{len(ungrouped)} dead letter(s) of {dlq} name no consumer group (no evstream.dlq.group "
            f"header; first: {dlq}[{first.partition}]@{first.offset}): choose where they go with "
            "--to-topic (e.g. <topic>.<group>.redrive), or leave them out with --group"
        )
    missing = sorted(targets - existing)
    if missing:
        raise ReplayInputError(
            f"redrive topic {', '.join(missing)} does not exist: declare it in topics.yaml "
            "(evstream topics add-retry-topics) and apply it; nothing was sent"
        )


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
        found += read_range(kafka, dlq, None, _at(offsets), None, partition, min(offsets), stops)[0]
    missing = wanted - {(r.partition, r.offset) for r in found}
    if missing:
        where = ", ".join(f"{dlq}[{p}]@{o}" for p, o in sorted(missing))
        raise ReplayInputError(f"no dead letter at {where} (removed by retention, or never there)")
    return sorted(found, key=lambda r: (r.partition, r.offset))
