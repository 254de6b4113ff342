"""Prometheus metrics of stream workers (the native engine and faust apps)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "JOIN_MISSING",
    "JOIN_WAITING",
    "JOIN_WAIT_EXPIRED",
    "LATE_EVENTS",
    "RECOVERY_REMAINING",
    "SKIPPED_UPDATES",
    "STALL_RESTARTS",
    "STREAM_EVENTS",
    "STREAM_LAG",
    "STREAM_LATENCY",
    "WINDOWS_CLOSED",
]

STREAM_EVENTS = Counter("evstream_stream_events", "Events processed by stream handlers, by topic.", ["topic"])
STREAM_LATENCY = Histogram(
    "evstream_stream_processing_seconds",
    "Time from an event entering a stream to its acknowledgement.",
    ["topic"],
)
STREAM_LAG = Gauge(
    "evstream_stream_lag",
    "Records between the committed offset and the end, per partition.",
    ["topic", "partition"],
)

SKIPPED_UPDATES = Counter(
    "evstream_stream_skipped_updates",
    "Table updates skipped because the event's source offset was already applied (replays).",
    ["table"],
)
LATE_EVENTS = Counter(
    "evstream_stream_late_events", "Events that arrived after all their windows had closed.", ["table"]
)
WINDOWS_CLOSED = Counter("evstream_stream_windows_closed", "Windows closed (final results).", ["table"])
JOIN_MISSING = Counter(
    "evstream_stream_join_missing",
    "Table lookups that found no row, by what the handler did.",
    ["table", "missing"],
)
JOIN_WAITING = Gauge(
    "evstream_stream_join_waiting",
    "Events held for a missing table row (lookup missing='wait'), by handler, on this worker.",
    ["handler"],
)
JOIN_WAIT_EXPIRED = Counter(
    "evstream_stream_join_wait_expired",
    "Held events that waited their max_wait (or overflowed max_events), by what was done then.",
    ["handler", "then"],
)
STALL_RESTARTS = Gauge(
    "evstream_worker_stall_restarts",
    "Times a worker on this data dir exited 75 (stalled) and was restarted; 0 for a healthy start.",
)


RECOVERY_REMAINING = Gauge(
    "evstream_stream_recovery_remaining",
    "Changelog records left to recover, per changelog partition (0 when recovered).",
    ["topic", "partition"],
)
