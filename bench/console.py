"""Web console page times on a large topic (issue 18, item 5), over loopback HTTP.

    EVSTREAM_STACK_DIR=$PWD/.stack .venv/bin/python -m bench.console [--records 1000000] [--requests 15]

Fills a 6-partition topic with ``--records`` Confluent-framed OrderPlaced records (envelope headers,
prebuilt bytes, raw producer), a 100-partition topic with a committed group, starts the console
in-process on a free port and times, after one warm-up each: the newest 50 records, 50 from an offset
near the end, 50 at a timestamp near the end, and the group page. Prints median and max per page.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import uvicorn
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient

from evstream.consumers.console import Backend, ConsoleSettings
from evstream.consumers.console.app import create_app
from evstream.schemas import AvroCodec, Envelope, RegistrySchemaStore
from evstream.schemas.domain import CATALOG, OrderPlaced
from evstream.settings import KafkaSettings, RegistrySettings
from evstream.stack import LocalStack
from tests.factories import mixed_events
from tests.helpers import wait_until


def create(admin: AdminClient, partitions: int) -> str:
    name = f"bench-console-{partitions}-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=-1)])[name].result(30)
    return name


def fill(bootstrap: str, registry_url: str, topic: str, count: int) -> float:
    """Produce ``count`` records; returns the wall time of the record at 95 % (for the time page)."""
    order = next(e for e in mixed_events(50) if isinstance(e, OrderPlaced))
    with SchemaRegistryClient({"url": registry_url}) as client:
        codec = AvroCodec(RegistrySchemaStore(client))
        value = codec.encode(
            CATALOG.subject(OrderPlaced, topic), OrderPlaced.avro_schema_dict(), order.model_dump()
        )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4"})
    marked = 0.0
    for i in range(count):
        headers = Envelope(event_type="OrderPlaced", source="bench").to_headers()
        if i == int(count * 0.95):
            marked = time.time()
        while True:
            try:
                producer.produce(topic, value=value, key=f"o-{i % 5000}", headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0
    return marked


def commit_group(bootstrap: str, topic: str, partitions: int) -> str:
    group = f"bench-console-{uuid.uuid4().hex[:6]}"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, p, 0) for p in range(partitions)], asynchronous=False)
    consumer.close()
    return group


@contextlib.contextmanager
def served(backend: Backend) -> Iterator[str]:
    """The console over ``backend``, in this process on a free loopback port; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(backend, ConsoleSettings()), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=20, what="the console to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def timed(client: httpx.Client, url: str, rounds: int) -> tuple[float, float]:
    assert client.get(url).status_code == 200  # warm-up (and a check that the page works)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        answer = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, answer.text[:300]
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=15)
    args = parser.parse_args()
    stack = LocalStack().state()
    bootstrap, registry_url = stack.bootstrap_servers, stack.registry_url or ""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    big, wide = create(admin, 6), create(admin, 100)
    started = time.perf_counter()
    marked = fill(bootstrap, registry_url, big, args.records)
    print(f"{args.records:,} records in {big} in {time.perf_counter() - started:.0f} s")
    group = commit_group(bootstrap, wide, 100)
    backend = Backend(KafkaSettings(bootstrap_servers=bootstrap), RegistrySettings(url=registry_url), CATALOG)
    at = datetime.fromtimestamp(marked, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    near_end = args.records // 6 - 500
    pages = {
        "newest 50": f"/topics/{big}/records?limit=50",
        "50 from an offset near the end": f"/topics/{big}/records?partition=0&from_offset={near_end}"
        "&limit=50",
        "50 at a timestamp (95 %)": f"/topics/{big}/records?from_time={at}&limit=50",
        "group page, 100 partitions": f"/groups/{group}",
    }
    try:
        with served(backend) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
            for label, url in pages.items():
                median, worst = timed(client, url, args.requests)
                print(
                    f"{label:34s} median {median:6.0f} ms   max {worst:6.0f} ms   ({args.requests} requests)"
                )
    finally:
        admin.delete_topics([big, wide], request_timeout=30)


if __name__ == "__main__":
    main()
