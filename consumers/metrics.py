"""Prometheus metrics of consuming (process-wide)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["CONSUMED", "HANDLER_LATENCY", "LAG", "OUTCOMES", "REPLIES"]

CONSUMED = Counter("evstream_events_consumed", "Records read, by topic.", ["topic", "group"])
OUTCOMES = Counter(
    "evstream_events_outcome",
    "What became of each record: handled, retried (in place), retry_topic, blocked, dead_lettered,"
    " skipped, duplicate, schema_held (its schema id unknown to the registry: held, asked again).",
    ["topic", "group", "outcome"],
)
HANDLER_LATENCY = Histogram(
    "evstream_handler_latency_seconds", "Handler run time per attempt.", ["topic", "group"]
)
LAG = Gauge(
    "evstream_consumer_lag",
    "Records between the group's committed offset and the end of the partition (librdkafka stats).",
    ["topic", "partition", "group"],
)
REPLIES = Counter(
    "evstream_replies", "Replies read by requesters: matched, late (after the timeout).", ["topic", "outcome"]
)
