"""Prometheus metrics of publishing (process-wide, shared by every producer)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["PUBLISHED", "PUBLISH_LATENCY"]

PUBLISHED = Counter(
    "evstream_events_published",
    "Events handed to Kafka, by topic, event type and outcome (acked, failed, indeterminate, invalid).",
    ["topic", "event_type", "outcome"],
)
PUBLISH_LATENCY = Histogram(
    "evstream_publish_latency_seconds",
    "From publish() to the broker's acknowledgement.",
    ["topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
