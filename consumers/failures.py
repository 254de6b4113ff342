"""Retry and dead-letter records: the original key, value and headers, plus headers saying why.

A record that failed keeps its *origin* (the source topic, partition, offset and timestamp, the
first failure time and the attempts so far) in ``evstream.retry.*`` headers while it travels
through retry topics, so the dead-letter record finally written says where it really came from.

A dead letter also names the consumer group that failed it (``evstream.dlq.group``): the
dead-letter topic ``<topic>.dlq`` is shared by every group reading ``<topic>``, and a redrive goes
back to that group only (its ``<topic>.<group>.redrive`` topic), never to the shared source topic.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from confluent_kafka import Message

__all__ = [
    "DLQ_PREFIX",
    "RETRY_PREFIX",
    "Headers",
    "Origin",
    "dead_letter_headers",
    "due_ms",
    "header_pairs",
    "origin_headers",
    "redrive_topic",
    "retry_headers",
]

DLQ_PREFIX = "evstream.dlq."
RETRY_PREFIX = "evstream.retry."
Headers = list[tuple[str, str | bytes | None]]
"""Record headers as written: ``(name, value)`` pairs."""


def redrive_topic(source: str, group: str) -> str:
    """Where ``evstream dlq redrive`` sends ``group``'s dead letters of ``source``:
    ``<source>.<group>.redrive``, read by that group's runner only."""
    return f"{source}.{group}.redrive"


def header_pairs(msg: Message) -> list[tuple[str, bytes]]:
    """A record's headers as ``(name, bytes)`` pairs, whatever shape the client returned."""
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in pairs]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a failing record was first read, and its failure history so far."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    first_failure: datetime
    attempts: int = 0
    tier: int = 0  # 0: read from the source topic; n: read from retry tier n

    @classmethod
    def of(cls, msg: Message) -> Origin:
        """The record's own coordinates, or those carried in its ``evstream.retry.*`` headers."""
        found = {
            k[len(RETRY_PREFIX) :]: v.decode() for k, v in header_pairs(msg) if k.startswith(RETRY_PREFIX)
        }
        if "topic" in found:
            try:
                return cls(
                    topic=found["topic"],
                    partition=int(found["partition"]),
                    offset=int(found["offset"]),
                    timestamp_ms=int(found["timestamp"]),
                    first_failure=datetime.fromisoformat(found["first-failure-at"]),
                    attempts=int(found["attempts"]),
                    tier=int(found["tier"]),
                )
            except (KeyError, ValueError):
                pass  # damaged retry headers: fall back to the record's own coordinates
        ts_type, ts = msg.timestamp()
        return cls(
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            timestamp_ms=ts if ts_type else -1,
            first_failure=datetime.now(UTC),
        )

    def after(self, attempts: int) -> Origin:
        """This origin with ``attempts`` more attempts made."""
        return replace(self, attempts=self.attempts + attempts)


def _original(msg: Message) -> Headers:
    return [
        (k, v)
        for k, v in header_pairs(msg)
        if not k.startswith(DLQ_PREFIX) and not k.startswith(RETRY_PREFIX)
    ]


def _error(error: BaseException | None, reason: str) -> tuple[bytes, bytes]:
    message = str(error) if error is not None else reason
    return (type(error).__name__ if error is not None else reason).encode(), message[:2000].encode()


def retry_headers(msg: Message, origin: Origin, error: BaseException, *, tier: int, due_ms: int) -> Headers:
    """Original headers, then ``evstream.retry.*``: the origin, the error and when to try again."""
    error_type, message = _error(error, "handler")
    return [
        *_original(msg),
        *origin_headers(origin, tier=tier),
        (f"{RETRY_PREFIX}due-at-ms", str(due_ms).encode()),
        (f"{RETRY_PREFIX}error-type", error_type),
        (f"{RETRY_PREFIX}error-message", message),
    ]


def origin_headers(origin: Origin, *, tier: int = 0) -> list[tuple[str, bytes]]:
    """``evstream.retry.*`` origin headers (no due time, attempts as given): what a retry record
    carries, and a redriven copy with tier 0, so :meth:`Origin.of` reads the original coordinates
    back (a new failure is dead-lettered with them; a foreign record keeps its derived event id)."""
    return [
        (f"{RETRY_PREFIX}topic", origin.topic.encode()),
        (f"{RETRY_PREFIX}partition", str(origin.partition).encode()),
        (f"{RETRY_PREFIX}offset", str(origin.offset).encode()),
        (f"{RETRY_PREFIX}timestamp", str(origin.timestamp_ms).encode()),
        (f"{RETRY_PREFIX}first-failure-at", origin.first_failure.isoformat().encode()),
        (f"{RETRY_PREFIX}attempts", str(origin.attempts).encode()),
        (f"{RETRY_PREFIX}tier", str(tier).encode()),
    ]


def due_ms(msg: Message) -> int:
    """When a retry-topic record may be tried again (epoch ms; 0 when it carries no due time)."""
    for key, value in header_pairs(msg):
        if key == f"{RETRY_PREFIX}due-at-ms":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def dead_letter_headers(
    msg: Message,
    origin: Origin,
    *,
    reason: str,
    error: BaseException | None,
    group: str | None = None,
) -> Headers:
    """Original headers, then ``evstream.dlq.*``: the consumer group that failed it (the runner
    and stream apps name it: a stream app's group is its app id), where it came from and what went
    wrong."""
    error_type, message = _error(error, reason)
    return [
        *_original(msg),
        *([(f"{DLQ_PREFIX}group", group.encode())] if group is not None else []),
        (f"{DLQ_PREFIX}reason", reason.encode()),
        (f"{DLQ_PREFIX}topic", origin.topic.encode()),
        (f"{DLQ_PREFIX}partition", str(origin.partition).encode()),
        (f"{DLQ_PREFIX}offset", str(origin.offset).encode()),
        (f"{DLQ_PREFIX}timestamp", str(origin.timestamp_ms).encode()),
        (f"{DLQ_PREFIX}error-type", error_type),
        (f"{DLQ_PREFIX}error-message", message),
        (f"{DLQ_PREFIX}attempts", str(origin.attempts).encode()),
        (f"{DLQ_PREFIX}first-failure-at", origin.first_failure.isoformat().encode()),
        (f"{DLQ_PREFIX}dead-lettered-at", datetime.now(UTC).isoformat().encode()),
    ]
