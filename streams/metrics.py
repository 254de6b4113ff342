"""Prometheus metrics of stream workers, fed by a faust sensor and a lag timer, and the stall
check built on the same numbers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from faust.sensors import Sensor
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

__all__ = [
    "JOIN_MISSING",
    "JOIN_WAITING",
    "JOIN_WAIT_EXPIRED",
    "LATE_EVENTS",
    "SKIPPED_UPDATES",
    "STALL_RESTARTS",
    "STREAM_EVENTS",
    "STREAM_LAG",
    "STREAM_LATENCY",
    "WINDOWS_CLOSED",
    "LagTracker",
    "PrometheusSensor",
    "RecoveryCollector",
    "SendErrors",
]

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


class RecoveryCollector:
    """``evstream_stream_recovery_remaining{topic,partition}``: changelog records left to replay
    per partition while tables recover (read from faust's recovery at scrape time)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "evstream_stream_recovery_remaining",
            "Changelog records left to recover, per changelog partition (0 when recovered).",
            labels=["topic", "partition"],
        )
        recovery = getattr(self.app.tables, "recovery", None)
        highwaters = dict(getattr(recovery, "active_highwaters", {}) or {})
        offsets = getattr(recovery, "active_offsets", {}) or {}
        for tp, highwater in sorted(highwaters.items()):
            offset = offsets.get(tp)
            left = 0 if highwater is None or offset is None else max(0, highwater - offset)
            family.add_metric([tp.topic, str(tp.partition)], left)
        yield family


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
