"""Dead-letter records: the original key, value and headers, plus headers saying why."""

from __future__ import annotations

from datetime import UTC, datetime

from confluent_kafka import Message

__all__ = ["DLQ_PREFIX", "dead_letter_headers", "header_pairs"]

DLQ_PREFIX = "evstream.dlq."


def header_pairs(msg: Message) -> list[tuple[str, bytes]]:
    """A record's headers as ``(name, bytes)`` pairs, whatever shape the client returned."""
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in pairs]


def dead_letter_headers(
    msg: Message, *, reason: str, error: BaseException | None, attempts: int, first_failure: datetime
) -> list[tuple[str, str | bytes | None]]:
    """Original headers first, then ``evstream.dlq.*``: where it came from and what went wrong."""
    ts_type, ts = msg.timestamp()
    original: list[tuple[str, str | bytes | None]] = [
        (k, v) for k, v in header_pairs(msg) if not k.startswith(DLQ_PREFIX)
    ]
    message = str(error) if error is not None else reason
    return [
        *original,
        (f"{DLQ_PREFIX}reason", reason.encode()),
        (f"{DLQ_PREFIX}topic", (msg.topic() or "").encode()),
        (f"{DLQ_PREFIX}partition", str(msg.partition()).encode()),
        (f"{DLQ_PREFIX}offset", str(msg.offset()).encode()),
        (f"{DLQ_PREFIX}timestamp", str(ts if ts_type else -1).encode()),
        (f"{DLQ_PREFIX}error-type", (type(error).__name__ if error is not None else reason).encode()),
        (f"{DLQ_PREFIX}error-message", message[:2000].encode()),
        (f"{DLQ_PREFIX}attempts", str(attempts).encode()),
        (f"{DLQ_PREFIX}first-failure-at", first_failure.isoformat().encode()),
        (f"{DLQ_PREFIX}dead-lettered-at", datetime.now(UTC).isoformat().encode()),
    ]
