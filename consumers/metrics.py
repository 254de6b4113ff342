"""Prometheus metrics of consuming (process-wide)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["CONSUMED", "HANDLER_LATENCY", "OUTCOMES"]

CONSUMED = Counter("evstream_events_consumed", "Records read, by topic.", ["topic", "group"])
OUTCOMES = Counter(
    "evstream_events_outcome",
    "What became of each record: handled, retried, dead_lettered, skipped, duplicate.",
    ["topic", "group", "outcome"],
)
HANDLER_LATENCY = Histogram(
    "evstream_handler_latency_seconds", "Handler run time per attempt.", ["topic", "group"]
)
