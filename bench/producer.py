"""Producer throughput: Kafka's Java ProducerPerformance (A), raw confluent-kafka (C), EventProducer (D).

Same broker, same topic settings (6 partitions, fresh topic per run), same producer settings
(acks=all, idempotence, lz4, linger 10 ms), same run. Time ends when flush returns. Sizes: ~100 B
(PaymentCaptured) and ~1 KB (OrderPlaced with 26 lines) Avro values. Reports medians of --runs and
the ratios D/C and C/A, then a per-event attribution of D's cost. Run (local stack up):

    .venv/bin/python -m bench.producer [--events 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bench.peers.common import AT, ids
from evstream.endpoints import kafka_settings, registry_settings
from evstream.producers import EventProducer, ProducerSettings
from evstream.schemas.domain import Currency, Money, OrderLine, OrderPlaced, PaymentCaptured, PaymentMethod
from evstream.schemas.events import Event
from evstream.stack import LocalStack, find_java

PRODUCER = {"acks": "all", "enable.idempotence": True, "compression.type": "lz4", "linger.ms": 10}


def small(i: int) -> Event:
    amount = Money(amount_minor=1999, currency=Currency.EUR)
    return PaymentCaptured(**ids(i), amount=amount, method=PaymentMethod.CARD, captured_at=AT)


def large(i: int) -> Event:
    price = Money(amount_minor=1250, currency=Currency.EUR)
    lines = [
        OrderLine(sku=f"SKU-{i % 97}-{n:04d}-LONG-DESCRIPTIVE-CODE", quantity=1 + n % 3, unit_price=price)
        for n in range(26)
    ]
    return OrderPlaced(
        order_id=f"order-{i % 10_000}",
        customer_id=f"customer-{i % 1000}",
        lines=lines,
        total=Money(amount_minor=50_000, currency=Currency.EUR),
        placed_at=AT,
        shipping_country="DE",
        coupon_code="WELCOME10",
    )


def new_topic(admin: AdminClient) -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, num_partitions=6, replication_factor=-1)])[name].result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        meta = admin.list_topics(name, timeout=5).topics.get(name)
        if (
            meta is not None
            and len(meta.partitions) == 6
            and all(p.leader >= 0 for p in meta.partitions.values())
        ):
            return name
        time.sleep(0.1)
    raise RuntimeError(f"{name} not ready")


def raw_run(bootstrap: str, topic: str, payload: bytes, keys: list[bytes], count: int) -> float:
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER, "queue.buffering.max.messages": 500_000})
    produce, poll, pool = producer.produce, producer.poll, len(keys)
    start = time.perf_counter()
    for i in range(count):
        while True:
            try:
                produce(topic, payload, keys[i % pool])
                break
            except BufferError:
                poll(0.01)
        poll(0)
    assert producer.flush(120) == 0
    return count / (time.perf_counter() - start)


def evstream_run(
    bootstrap: str, registry_url: str, topic: str, events: list[Event], count: int, *, dicts: bool
) -> float:
    """D: publish models (validated when built); D-dict: publish_dict, validating each event in the loop."""
    producer = EventProducer(
        kafka=kafka_settings(bootstrap),
        registry=registry_settings(registry_url),
        settings=ProducerSettings(linger_ms=10),
    )
    pool = len(events)
    with producer:
        producer.publish(events[0], topic=topic).result(30)  # registers the schema outside the clock
        if dicts:
            event_type = events[0].event_type()
            data = [e.model_dump(mode="json") for e in events]
            publish_dict = producer.publish_dict
            start = time.perf_counter()
            for i in range(count):
                publish_dict(event_type, data[i % pool], topic=topic)
        else:
            publish = producer.publish
            start = time.perf_counter()
            for i in range(count):
                publish(events[i % pool], topic=topic)
        assert producer.flush(120) == 0
        return count / (time.perf_counter() - start)


def java_run(bootstrap: str, topic: str, size: int, count: int, libs: str) -> float:
    java = find_java(17, env_var="EVSTREAM_JAVA_HOME", purpose="ProducerPerformance")
    props = [f"bootstrap.servers={bootstrap}"] + [f"{k}={str(v).lower()}" for k, v in PRODUCER.items()]
    cmd = [
        str(java),
        "-Xmx512m",
        "-cp",
        f"{libs}/*",
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(count),
        "--record-size",
        str(size),
        "--throughput",
        "-1",
        "--producer-props",
        *props,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600).stdout
    match = re.findall(r"(\d+) records sent, ([\d.]+) records/sec", out)
    return float(match[-1][1])


def median(fn: Callable[[], float], runs: int) -> float:
    return statistics.median(fn() for _ in range(runs))


def attribution(events: list[Event], codec_encode: Callable[[dict[str, Any]], bytes]) -> dict[str, float]:
    n = len(events)
    data = [e.model_dump(mode="json") for e in events]
    model = type(events[0])
    timings = {}
    start = time.perf_counter()
    for d in data:
        model.model_validate(d)
    timings["validate (dict -> model)"] = (time.perf_counter() - start) / n * 1e6
    start = time.perf_counter()
    dumped = [e.model_dump() for e in events]
    timings["model_dump"] = (time.perf_counter() - start) / n * 1e6
    start = time.perf_counter()
    for d in dumped:
        codec_encode(d)
    timings["encode (Avro + framing)"] = (time.perf_counter() - start) / n * 1e6
    return timings


def measure(label: str, make: Callable[[int], Event], count: int, runs: int) -> None:
    stack = LocalStack().state()
    bootstrap, registry_url = stack.bootstrap_servers, stack.registry_url or ""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    events = [make(i) for i in range(10_000)]  # a pool, cycled: 1M models of 1 KB would not fit in memory
    with EventProducer(kafka=kafka_settings(bootstrap), registry=registry_settings(registry_url)) as probe:
        topic0 = new_topic(admin)
        probe.publish(events[0], topic=topic0).result(30)
        encode = probe.encoder(topic0, type(events[0]))
    payload = encode(events[0].model_dump())
    keys = [e.aggregate_id().encode() for e in events]

    def tier_d() -> float:
        return evstream_run(bootstrap, registry_url, new_topic(admin), events, count, dicts=False)

    def tier_d_dict() -> float:
        return evstream_run(bootstrap, registry_url, new_topic(admin), events, count, dicts=True)

    def tier_c() -> float:
        return raw_run(bootstrap, new_topic(admin), payload, keys, count)

    def tier_a() -> float:
        return java_run(bootstrap, new_topic(admin), len(payload), count, str(stack.kafka_libs))

    a, c = median(tier_a, runs), median(tier_c, runs)
    d, dd = median(tier_d, runs), median(tier_d_dict, runs)
    name = f"{label} ({len(payload)} B)"
    ratios = f"{d / c:>7.2f}{dd / c:>8.2f}{c / a:>7.2f}"
    print(f"{name:<16}{count:>10,}{a:>12,.0f}{c:>12,.0f}{d:>12,.0f}{dd:>12,.0f}{ratios}")
    parts = attribution(events, encode)
    print(
        "    D per event (us): "
        + ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
        + f"; whole publish {1e6 / d:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events per run for ~100 B")
    parser.add_argument("--events-1kb", type=int, default=1_000_000, help="events per run for ~1 KB")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"runs: {args.runs} (median); broker {LocalStack().state().bootstrap_servers}; events/s")
    print(
        f"{'size':<16}{'events':>10}{'A java':>12}{'C raw':>12}{'D models':>12}{'D dicts':>12}"
        f"{'D/C':>7}{'Dd/C':>8}{'C/A':>7}"
    )
    measure("~100 B", small, args.events, args.runs)
    measure("~1 KB", large, args.events_1kb, args.runs)


if __name__ == "__main__":
    main()
