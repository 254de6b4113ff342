"""Stream pipeline throughput on one worker: the evstream/faust demo app vs Quix Streams.

Both read the same order events (Avro via the registry) from the same 6-partition topic on the
same broker, re-key OrderPlaced by customer and keep running totals per customer; the faust app
also keeps windowed revenue and emits tier changes. Each is timed from process start until every
OrderPlaced has been aggregated (faust: its events counter on the by-customer stream, then the
changelog is checked outside the timing; Quix: it exits after producing its last update), so
the times include start-up and group join (reported separately for faust). Run (local stack up):

    python3 -m venv bench/.venv-quix && bench/.venv-quix/bin/pip install -r bench/quix/requirements.txt
    .venv/bin/python -m bench.streams [--events 60000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from evstream.endpoints import kafka_settings, registry_settings
from evstream.producers import EventProducer
from evstream.schemas.domain import OrderPlaced
from evstream.stack import LocalStack
from evstream.streams.views import read_aggregates
from tests.factories import mixed_events
from tests.stream_helpers import metric

QUIX = Path(__file__).parent / ".venv-quix" / "bin" / "python"


def topics(bootstrap: str, *specs: tuple[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(n, p, replication_factor=-1) for n, p in specs]).values():
        future.result(30)


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def faust_run(bootstrap: str, registry: str, orders: str, expect: int) -> tuple[float, float]:
    run = uuid.uuid4().hex[:6]
    customers, tiers = f"bench-c-{run}", f"bench-t-{run}"
    topics(bootstrap, (customers, 3), (tiers, 3))
    app_id, port = f"bench-app-{run}", 9188
    env = {
        **os.environ,
        "EVSTREAM_BOOTSTRAP_SERVERS": bootstrap,
        "EVSTREAM_REGISTRY_URL": registry,
        "EVSTREAM_STREAMS_APP_ID": app_id,
        "EVSTREAM_STREAMS_ORDERS_TOPIC": orders,
        "EVSTREAM_STREAMS_CUSTOMERS_TOPIC": customers,
        "EVSTREAM_STREAMS_TIERS_TOPIC": tiers,
        "EVSTREAM_WORKER_HTTP_PORT": str(port),
        "EVSTREAM_WORKER_LOG_LEVEL": "WARNING",
    }
    started = time.perf_counter()
    worker = subprocess.Popen(
        [sys.executable, "-m", "evstream", "worker", "evstream.streams.demo:app"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not ready(port):
            time.sleep(0.1)
        ready_at = time.perf_counter() - started
        by_customer = f"{app_id}-orders-by-customer"
        while metric(port, "evstream_stream_events_total", topic=by_customer) < expect:
            time.sleep(0.1)  # cheap to ask: /metrics, not the changelog
        done = time.perf_counter() - started
        kafka = kafka_settings(bootstrap)  # then check the result is right (outside the timing)
        counted = sum(read_aggregates(kafka, app_id).orders.values())
        while counted < expect:
            time.sleep(0.5)
            counted = sum(read_aggregates(kafka, app_id).orders.values())
        return done, ready_at
    finally:
        worker.terminate()
        worker.wait(60)


def quix_run(bootstrap: str, registry: str, orders: str, expect: int) -> float:
    out = f"bench-quix-out-{uuid.uuid4().hex[:6]}"
    topics(bootstrap, (out, 3))
    started = time.perf_counter()
    subprocess.run(
        [str(QUIX), str(Path(__file__).parent / "quix" / "pipeline.py"), "--broker", bootstrap,
         "--registry", registry, "--topic", orders, "--out", out, "--expect", str(expect)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=60_000, help="mixed events generated (orders kept)")
    args = parser.parse_args()
    stack = LocalStack().state()
    bootstrap, registry = stack.bootstrap_servers, stack.registry_url or ""
    orders = f"bench-orders-{uuid.uuid4().hex[:6]}"
    topics(bootstrap, (orders, 6))
    events = [e for e in mixed_events(args.events, seed=3) if e.topic == "orders"]
    placed = sum(isinstance(e, OrderPlaced) for e in events)
    with EventProducer(kafka=kafka_settings(bootstrap), registry=registry_settings(registry)) as producer:
        for event in events:
            producer.publish(event, topic=orders)
        producer.flush(120)
    print(f"{len(events):,} order events ({placed:,} OrderPlaced) on {orders}")
    elapsed, ready_at = faust_run(bootstrap, registry, orders, placed)
    print(
        f"evstream/faust: {elapsed:.1f} s ({len(events) / elapsed:,.0f} ev/s incl. start;"
        f" ready after {ready_at:.1f} s, {len(events) / (elapsed - ready_at):,.0f} ev/s after ready)"
    )
    if QUIX.exists():
        quix = quix_run(bootstrap, registry, orders, placed)
        print(f"Quix Streams:   {quix:.1f} s ({len(events) / quix:,.0f} ev/s incl. start)")
    else:
        print(f"Quix Streams: skipped, no {QUIX} (see the module docstring)")


if __name__ == "__main__":
    main()
