"""Prometheus metrics of stream workers, fed by a faust sensor and a lag timer."""

from __future__ import annotations

import time
from typing import Any

from faust.sensors import Sensor
from prometheus_client import Counter, Gauge, Histogram

__all__ = ["STREAM_EVENTS", "STREAM_LAG", "STREAM_LATENCY", "PrometheusSensor", "update_lag"]

STREAM_EVENTS = Counter("evstream_stream_events", "Events processed by stream agents, by topic.", ["topic"])
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


class PrometheusSensor(Sensor):
    """Counts events and measures processing latency per source topic."""

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> dict[str, float]:
        return {"started": time.perf_counter()}

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: dict[str, Any] | None = None
    ) -> None:
        STREAM_EVENTS.labels(tp.topic).inc()
        if state and "started" in state:
            STREAM_LATENCY.labels(tp.topic).observe(time.perf_counter() - state["started"])


def update_lag(consumer: Any) -> dict[tuple[str, int], int]:
    """Set the lag gauge of every assigned partition from the consumer's view; returns it."""
    lags: dict[tuple[str, int], int] = {}
    for tp in consumer.assignment():
        if tp.topic.endswith("-changelog"):
            continue  # the worker writes these; it reads them only to recover tables
        end = consumer.highwater(tp)
        committed = consumer._committed_offset.get(tp)
        if end is None:
            continue
        lag = max(0, end - (committed if committed is not None else 0))
        lags[(tp.topic, tp.partition)] = lag
        STREAM_LAG.labels(tp.topic, str(tp.partition)).set(lag)
    return lags
