"""Where the console's timestamp page spends its time, request by request (issue 18, item 5).

    EVSTREAM_STACK_DIR=$PWD/.stack .venv/bin/python -m bench.console_trace [--records 1000000]
        [--requests 40] [--reader '{"fetch.queue.backoff.ms": 1000, ...}'] [--librdkafka-log]
        [--versus '{...}']

Fills a 6-partition topic as ``bench.console`` does, serves the console in-process (lag sampler
on) and requests the page of 50 records at a timestamp (95 % into the topic) ``--requests`` times.
Every Admin API offset lookup, metadata read, consumer call, decode and lag-sampler tick is timed;
per phase the median and max are printed, and for each request slower than ``--slow-ms`` its
phases (and, with ``--librdkafka-log``, the reading consumer's fetch/backoff log lines). ``--reader``
overrides the reading consumer's fetch settings, e.g. librdkafka's defaults to see the old stall.
``--versus`` serves a second console reading with other settings and alternates the requests
between the two (an A/B under the same load); it prints each one's page times only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from bench.console import create, fill, served
from evstream.consumers.console import Backend, LagSampler
from evstream.consumers.console import backend as backend_module
from evstream.consumers.replay.cluster import Cluster
from evstream.schemas.domain import CATALOG
from evstream.settings import KafkaSettings, RegistrySettings
from evstream.stack import LocalStack

Span = tuple[str, str, float, float]  # thread, phase, start, end (perf_counter seconds)


class Tracer(logging.Handler):
    """Collects timed spans and librdkafka log lines (it is their logging handler too)."""

    def __init__(self) -> None:
        super().__init__()
        self.spans: list[Span] = []
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((time.perf_counter(), record.getMessage()))

    def span(self, phase: str, started: float) -> None:
        self.spans.append((threading.current_thread().name, phase, started, time.perf_counter()))

    def wrap(self, phase: Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` timed under the name ``phase(*args)``."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.span(phase(*args), started)

        return timed


class TimedConsumer:
    """The reading consumer with every call timed."""

    def __init__(self, real: Consumer, tracer: Tracer) -> None:
        self._real, self._tracer = real, tracer

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._real, name)
        return self._tracer.wrap(lambda *_: f"consumer.{name}", found) if callable(found) else found


def instrument(tracer: Tracer, reader: dict[str, Any], log: bool) -> None:
    """Time the console's I/O phases (monkeypatching this process's classes)."""
    cluster_offsets = Cluster.offsets
    Cluster.offsets = tracer.wrap(  # type: ignore[method-assign]
        lambda _self, keys, spec: f"list_offsets {type(spec).__name__} x{len(keys)}",
        lambda self, keys, spec: cluster_offsets(self, list(keys), spec),
    )
    Cluster.partitions = tracer.wrap(lambda *_: "metadata (partitions)", Cluster.partitions)  # type: ignore[method-assign]
    LagSampler.sample_once = tracer.wrap(lambda *_: "lag sampler tick", LagSampler.sample_once)  # type: ignore[method-assign]
    Backend._decode = tracer.wrap(lambda *_: "decode", Backend._decode)  # type: ignore[method-assign]
    backend_module._READER_FETCH.update(reader)
    logger = logging.getLogger("bench.console_trace.librdkafka")
    logger.addHandler(tracer)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    def consumer(conf: dict[str, Any]) -> Consumer:
        return Consumer({**conf, "debug": "fetch"}, logger=logger) if log else Consumer(conf)

    backend_module.Consumer = consumer  # type: ignore[attr-defined,assignment]
    reading = Backend._reading

    @contextlib.contextmanager
    def timed_reading(self: Backend) -> Iterator[Any]:
        with reading(self) as real:
            yield TimedConsumer(real, tracer)

    Backend._reading = timed_reading  # type: ignore[method-assign]


def report(tracer: Tracer, times: list[tuple[float, float]], slow_ms: float) -> None:
    for i, (began, ended) in enumerate(times):
        if (ended - began) * 1000 < slow_ms:
            continue
        print(f"request {i}: {(ended - began) * 1000:.0f} ms")
        consumes = [s for s in tracer.spans if s[1] == "consumer.consume" and began <= s[2] <= ended]
        for thread, phase, a, b in tracer.spans:
            if b >= began and a <= ended and phase != "consumer.consume" and (b - a) > 0.002:
                print(
                    f"  {thread[:24]:24s} {phase:36s} at +{(a - began) * 1000:5.0f} ms"
                    f"  {(b - a) * 1000:5.0f} ms"
                )
        waited = sum(b - a for _, _, a, b in consumes) * 1000
        print(
            f"  {'':24s} {'consumer.consume (all calls)':36s} {len(consumes)} calls, {waited:.0f} ms in all"
        )
        for at, line in tracer.lines:
            if began <= at <= ended and line.startswith("BACKOFF"):
                print(f"  librdkafka at +{(at - began) * 1000:5.0f} ms: {line[:160]}")
    print(f"\n{'phase (console request threads)':40s} {'calls':>6s} {'median ms':>10s} {'max ms':>8s}")
    phases: dict[str, list[float]] = {}
    for thread, phase, a, b in tracer.spans:
        if not thread.startswith("evstream-console-lag") or phase == "lag sampler tick":
            phases.setdefault(phase, []).append((b - a) * 1000)
    for phase, spans in sorted(phases.items()):
        print(f"{phase:40s} {len(spans):6d} {statistics.median(spans):10.1f} {max(spans):8.1f}")
    pages = [(b - a) * 1000 for a, b in times]
    print(
        f"\npage: median {statistics.median(pages):.0f} ms, max {max(pages):.0f} ms ({len(pages)} requests)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--slow-ms", type=float, default=200.0)
    parser.add_argument("--reader", type=json.loads, default={}, help="reading consumer settings (JSON)")
    parser.add_argument(
        "--versus", type=json.loads, default=None, help="A/B: a second console reading with these settings"
    )
    parser.add_argument("--librdkafka-log", action="store_true", help="debug=fetch on the reading consumer")
    args = parser.parse_args()
    tracer = Tracer()
    instrument(tracer, args.reader, args.librdkafka_log)
    stack = LocalStack().state()
    bootstrap, registry_url = stack.bootstrap_servers, stack.registry_url or ""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = create(admin, 6)
    marked = fill(bootstrap, registry_url, topic, args.records)
    print(f"{args.records:,} records in {topic}; reader fetch settings {backend_module._READER_FETCH}")
    at = datetime.fromtimestamp(marked, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    url = f"/topics/{topic}/records?from_time={at}&limit=50"
    try:
        if args.versus is not None:
            compare(bootstrap, registry_url, url, args.versus, args.requests)
            return
        times: list[tuple[float, float]] = []
        backend = Backend(
            KafkaSettings(bootstrap_servers=bootstrap), RegistrySettings(url=registry_url), CATALOG
        )
        with served(backend) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
            assert client.get(url).status_code == 200  # warm-up
            tracer.spans.clear()
            for _ in range(args.requests):
                began = time.perf_counter()
                answer = client.get(url)
                times.append((began, time.perf_counter()))
                assert answer.status_code == 200, answer.text[:300]
        report(tracer, times, args.slow_ms)
    finally:
        admin.delete_topics([topic], request_timeout=30)


def compare(bootstrap: str, registry_url: str, url: str, versus: dict[str, Any], requests: int) -> None:
    """Two consoles side by side, one reading with the ``--reader`` settings, one with ``versus``;
    requests alternate between them, so both see the same moments of the machine's load."""
    configs = {
        "reader": dict(backend_module._READER_FETCH),
        "versus": {**backend_module._READER_FETCH, **versus},
    }
    times: dict[str, list[float]] = {name: [] for name in configs}
    with contextlib.ExitStack() as stack:
        clients = {}
        for name, conf in configs.items():  # the reading consumer is made, with these settings, at warm-up
            backend_module._READER_FETCH.clear()
            backend_module._READER_FETCH.update(conf)
            backend = Backend(
                KafkaSettings(bootstrap_servers=bootstrap), RegistrySettings(url=registry_url), CATALOG
            )
            base_url = stack.enter_context(served(backend))
            clients[name] = stack.enter_context(httpx.Client(base_url=base_url, timeout=30))
            assert clients[name].get(url).status_code == 200
        for _ in range(requests):
            for name, client in clients.items():
                began = time.perf_counter()
                answer = client.get(url)
                times[name].append((time.perf_counter() - began) * 1000)
                assert answer.status_code == 200, answer.text[:300]
    for name, conf in configs.items():
        pages = times[name]
        slow = sum(1 for t in pages if t >= 300)
        print(
            f"{name:7s} median {statistics.median(pages):5.0f} ms  max {max(pages):6.0f} ms  "
            f">= 300 ms: {slow:2d} of {len(pages)}  {conf}"
        )


if __name__ == "__main__":
    main()
