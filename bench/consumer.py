"""Consumer throughput: raw confluent-kafka ``consume(num_messages=...)`` (C) vs ConsumerRunner (D).

One topic (6 partitions) is filled once with ~100 B PaymentCaptured events by EventProducer; each
run reads all of them with a fresh group. The clock starts at the first record and stops at the
last. D decodes (Avro via the registry), validates into the model, dispatches to a no-op handler
and stores the offset; C only pulls the bytes. Median of --runs. Run (local stack up):

    .venv/bin/python -m bench.consumer [--events 200000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from bench.producer import new_topic, small
from evstream.consumers import ConsumerRunner, ConsumerSettings, Handlers, MessageContext
from evstream.endpoints import kafka_settings, registry_settings
from evstream.producers import EventProducer
from evstream.schemas.domain import PaymentCaptured
from evstream.stack import LocalStack


def raw_run(bootstrap: str, topic: str, count: int) -> float:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    return drain_rate(consumer, count)


def drain_rate(consumer: Consumer, count: int) -> float:
    """Consume ``count`` records in batches of 1000; events/s from the first record. Closes it."""
    seen, start = 0, 0.0
    try:
        while seen < count:
            batch = consumer.consume(1000, timeout=1.0)
            if batch and not start:
                start = time.perf_counter()
            seen += sum(1 for m in batch if m.error() is None)
        return count / (time.perf_counter() - start)
    finally:
        consumer.close()


def runner_run(bootstrap: str, registry_url: str, topic: str, count: int) -> float:
    handlers = Handlers()
    marks: list[float] = []

    @handlers.on(PaymentCaptured)
    def handle(event: PaymentCaptured, ctx: MessageContext) -> None:
        if not marks:
            marks.append(time.perf_counter())
        if len(marks) < 2:
            marks.append(0.0)
        marks[1] = time.perf_counter()

    runner = ConsumerRunner(
        f"bench-{uuid.uuid4().hex[:8]}",
        handlers,
        topics=[topic],
        kafka=kafka_settings(bootstrap),
        registry=registry_settings(registry_url),
        settings=ConsumerSettings(batch_size=1000),
    )
    stats = runner.run(until_idle_s=2)
    assert stats.handled == count, stats
    return count / (marks[1] - marks[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    stack = LocalStack().state()
    bootstrap, registry_url = stack.bootstrap_servers, stack.registry_url or ""
    topic = new_topic(AdminClient({"bootstrap.servers": bootstrap}))
    pool = [small(i) for i in range(10_000)]
    with EventProducer(kafka=kafka_settings(bootstrap), registry=registry_settings(registry_url)) as producer:
        for i in range(args.events):
            producer.publish(pool[i % len(pool)], topic=topic)
        assert producer.flush(120) == 0
    c = statistics.median(raw_run(bootstrap, topic, args.events) for _ in range(args.runs))
    d = statistics.median(runner_run(bootstrap, registry_url, topic, args.events) for _ in range(args.runs))
    print(f"events: {args.events:,} (~100 B Avro); runs: {args.runs} (median)")
    print(
        f"C raw consume: {c:,.0f} ev/s   D ConsumerRunner (decode + validate + dispatch): {d:,.0f} ev/s   "
        f"D/C {d / c:.2f}   D per event {1e6 / d:.1f} us"
    )


if __name__ == "__main__":
    main()
