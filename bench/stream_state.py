"""Stream engine figures beside throughput: table recovery and end-to-end latency.

``recovery``: a compacted changelog of N keys (evstream's row records, ~120 B each) is written
to a fresh 1-partition topic; then the engine's own :class:`Recovery` reads it into a new store,
``memory://`` and ``rocksdb://`` (a fresh directory: the worst case, a worker with no files), and
a second ``rocksdb://`` recovery over the files the first left (a restart: only the changelog past
the checkpoint is read). Reports seconds and rows/s.

``latency``: the pipeline orders -> ``group_by`` (an internal topic) -> a handler that updates a
table and publishes a derived event, as an ``evstream worker`` process; orders are published at
a fixed rate with :class:`EventProducer` (its defaults) and the time from ``publish()`` to the
derived event arriving at a ``read_committed`` consumer in this process is measured (p50/p99/max).
exactly_once outputs become visible at each commit, so their latency is about the commit
interval. Run (stack up)::

    .venv/bin/python -m bench.stream_state recovery [--keys 1000000]
    .venv/bin/python -m bench.stream_state latency [--rate 1000] [--seconds 20] [--guarantee at_least_once]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from evstream.endpoints import kafka_settings, registry_settings
from evstream.settings import librdkafka_config
from evstream.stack import LocalStack
from evstream.streams.engine.recovery import Recovery
from evstream.streams.state.records import Row, encode_key
from evstream.streams.state.tables import TableState


def _topic(bootstrap: str, name: str, partitions: int, config: dict[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1, config=config or {})]).values():
        future.result()


def recovery(bootstrap: str, keys: int) -> None:
    changelog = f"bench-changelog-{uuid.uuid4().hex[:6]}"
    _topic(bootstrap, changelog, 1, {"cleanup.policy": "compact"})
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "compression.type": "lz4"})
    started = time.perf_counter()
    for i in range(keys):
        row = Row({"total_minor": {"EUR": i * 7, "USD": i}, "orders": i % 50}, {"orders:0": i})
        while True:
            try:
                producer.produce(changelog, row.to_bytes(), encode_key(f"customer-{i:08d}"), partition=0)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0
    print(f"wrote {keys:,} changelog rows in {time.perf_counter() - started:.1f} s")
    conf = librdkafka_config(kafka_settings(None))
    data = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    try:
        for store in ("memory://", "rocksdb://", "rocksdb://"):
            table: TableState[Any] = TableState("totals", Any, 1, changelog)
            engine = Recovery(conf, store, data)
            began = time.perf_counter()
            read = engine.recover([(table, 0)])
            elapsed = time.perf_counter() - began
            engine.close()
            rate = read / elapsed if elapsed else float("inf")
            print(f"{store:12} read {read:>9,} rows in {elapsed:6.1f} s ({rate:,.0f} rows/s)")
            table.close_partition(0)
    finally:
        shutil.rmtree(data, ignore_errors=True)
        AdminClient({"bootstrap.servers": bootstrap}).delete_topics([changelog])


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _arrivals(messages: list[Any], sent: dict[str, float], seen: dict[str, float]) -> None:
    """The latency of each derived event among ``messages`` (matched to its cause's send time;
    the first arrival counts: at_least_once may re-emit an event with the same id)."""
    from evstream.schemas import Envelope  # noqa: PLC0415

    now = time.perf_counter()
    for msg in messages:
        if msg.error() is None:
            cause = Envelope.from_headers(msg.headers()).causation_id
            if cause in sent and cause not in seen:
                seen[cause] = now - sent[cause]


def latency(bootstrap: str, registry: str, rate: int, seconds: float, guarantee: str) -> None:
    from evstream.producers import EventProducer  # noqa: PLC0415
    from tests.factories import mixed_events  # noqa: PLC0415

    run = uuid.uuid4().hex[:6]
    orders, out = f"bench-lat-orders-{run}", f"bench-lat-out-{run}"
    _topic(bootstrap, orders, 6)
    _topic(bootstrap, out, 3)
    port = 9189
    env = {
        **os.environ,
        "EVSTREAM_BOOTSTRAP_SERVERS": bootstrap,
        "EVSTREAM_REGISTRY_URL": registry,
        "EVSTREAM_STREAMS_APP_ID": f"bench-lat-{run}",
        "EVSTREAM_STREAMS_PARTITIONS": "6",
        "EVSTREAM_STREAMS_STORE": "memory://",
        "EVSTREAM_STREAMS_PROCESSING_GUARANTEE": guarantee,
        "BENCH_ORDERS": orders,
        "BENCH_OUT": out,
        "EVSTREAM_WORKER_HTTP_PORT": str(port),
        "EVSTREAM_WORKER_LOG_LEVEL": "INFO",
    }
    log = Path(tempfile.gettempdir()) / f"bench-lat-{run}.log"
    with log.open("wb") as sink:
        worker = subprocess.Popen(
            [sys.executable, "-m", "evstream", "worker", "bench.streams:app"],
            env=env,
            stdout=sink,
            stderr=sink,
        )
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-lat-probe-{run}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([out])
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 60
        while not _ready(port):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit(f"the worker did not become ready ({worker.poll()}): {log}")
            time.sleep(0.2)
        events = [
            e
            for e in mixed_events(int(rate * seconds * 4) + 100, seed=9)
            if type(e).__name__ == "OrderPlaced"
        ]
        events = events[: int(rate * seconds)]
        kafka, registry_conf = kafka_settings(bootstrap), registry_settings(registry)
        with EventProducer(kafka=kafka, registry=registry_conf) as producer:
            producer.publish(events[0], topic=orders)  # schemas registered, connections made
            producer.flush(10)
            began = time.perf_counter()
            for i, event in enumerate(events[1:], start=1):
                due = began + i / rate
                while (now := time.perf_counter()) < due:
                    time.sleep(min(0.0005, due - now))
                event_id = uuid.uuid4()
                producer.publish(event, topic=orders, event_id=event_id)
                sent[str(event_id)] = time.perf_counter()
                _arrivals(consumer.consume(100, 0), sent, seen)
            end = time.monotonic() + 30
            while len(seen) < len(sent) and time.monotonic() < end:
                _arrivals(consumer.consume(500, 0.2), sent, seen)
    finally:
        consumer.close()
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    ms = sorted(v * 1000 for v in seen.values())
    p99 = ms[int(len(ms) * 0.99) - 1] if ms else float("nan")
    print(
        f"{guarantee} at {rate}/s through group_by: {len(ms)} of {len(sent)} derived events; "
        f"p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, max {ms[-1]:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    rec = sub.add_parser("recovery")
    rec.add_argument("--keys", type=int, default=1_000_000)
    lat = sub.add_parser("latency")
    lat.add_argument("--rate", type=int, default=1000)
    lat.add_argument("--seconds", type=float, default=20)
    lat.add_argument("--guarantee", default="at_least_once", choices=["at_least_once", "exactly_once"])
    args = parser.parse_args()
    state = LocalStack().state()
    if args.what == "recovery":
        recovery(state.bootstrap_servers, args.keys)
    else:
        latency(state.bootstrap_servers, state.registry_url or "", args.rate, args.seconds, args.guarantee)


if __name__ == "__main__":
    main()
