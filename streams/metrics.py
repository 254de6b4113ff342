"""Prometheus metrics of stream workers, fed by a faust sensor and a lag timer, and the stall
check built on the same numbers."""

from __future__ import annotations

import time
from typing import Any

from faust.sensors import Sensor
from prometheus_client import Counter, Gauge, Histogram

__all__ = ["STREAM_EVENTS", "STREAM_LAG", "STREAM_LATENCY", "LagTracker", "PrometheusSensor", "SendErrors"]

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


class SendErrors(Sensor):
    """Counts records faust could not produce (changelogs included): any means an unclean stop."""

    count = 0

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        self.count += 1


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


class LagTracker:
    """Lag per assigned partition (gauge), and partitions that have lag but make no progress."""

    def __init__(self) -> None:
        self._labels: set[tuple[str, str]] = set()
        self._progress: dict[tuple[str, int], tuple[int | None, float]] = {}  # committed, since

    def update(self, consumer: Any) -> dict[tuple[str, int], int]:
        """Refresh the gauge from the consumer's view (changelogs excluded); returns the lags."""
        lags: dict[tuple[str, int], int] = {}
        now = time.monotonic()
        for tp in consumer.assignment():
            if tp.topic.endswith("-changelog"):
                continue  # the worker writes these; it reads them only to recover tables
            end = consumer.highwater(tp)
            if end is None:
                continue
            committed = consumer._committed_offset.get(tp)  # faust keeps no public accessor
            key = (tp.topic, tp.partition)
            lags[key] = max(0, end - (committed if committed is not None else 0))
            before = self._progress.get(key)
            # A transaction's commit marker is never delivered, so an idle partition of a
            # transactionally written topic shows lag 1 for ever: that is not a stall.
            if before is None or before[0] != committed or lags[key] <= 1:
                self._progress[key] = (committed, now)
        current = {(t, str(p)) for t, p in lags}
        for topic, partition in self._labels - current:  # no longer ours: drop the stale series
            STREAM_LAG.remove(topic, partition)
        for (name, number), value in lags.items():
            STREAM_LAG.labels(name, str(number)).set(value)
        self._labels = current
        self._progress = {k: v for k, v in self._progress.items() if k in lags}
        return lags

    def stalled(self, after_s: float) -> list[tuple[str, int]]:
        """Partitions with lag whose committed offset has not moved for ``after_s`` seconds."""
        now = time.monotonic()
        return sorted(k for k, (_committed, since) in self._progress.items() if now - since > after_s)

    def reset(self) -> None:
        """Forget progress clocks (after a rebalance or recovery, time starts again)."""
        now = time.monotonic()
        self._progress = {k: (c, now) for k, (c, _since) in self._progress.items()}
