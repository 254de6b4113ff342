"""Prometheus metrics of the gateway (requests by route and status, latency by route)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Histogram

__all__ = ["REQUESTS", "REQUEST_SECONDS", "observe"]

REQUESTS = Counter(
    "evstream_gateway_requests",
    "Gateway publish requests by route (event type or batch) and status.",
    ["route", "status"],
)
REQUEST_SECONDS = Histogram(
    "evstream_gateway_request_seconds",
    "Gateway publish request latency, from routing to the response (Kafka ack included).",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
_children: dict[tuple[str, int], tuple[Any, Any]] = {}


def observe(route: str, status: int, started: float) -> None:
    """Count one request and its latency (labelled children cached: ``labels()`` is slow)."""
    found = _children.get((route, status))
    if found is None:
        found = _children[(route, status)] = (
            REQUESTS.labels(route, str(status)),
            REQUEST_SECONDS.labels(route),
        )
    found[0].inc()
    found[1].observe(time.perf_counter() - started)
