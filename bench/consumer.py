"""Consumer throughput: raw confluent-kafka ``consume(num_messages=...)`` (C) vs ConsumerRunner (D).

One topic (6 partitions) is filled once with ~100 B PaymentCaptured events by EventProducer; each
run reads all of them with a fresh group. The clock starts at the first record and stops at the
last. D decodes (Avro via the registry), validates into the model, dispatches to a no-op handler
and stores the offset; C only pulls the bytes; D batch is the same with an ``@on_batch`` handler.
CPU us/event is the process's CPU time (all threads, librdkafka's included) over the run. Rounds
are interleaved (C, D, D batch, C, ...); medians of --runs. Run (local stack up):

    .venv/bin/python -m bench.consumer [--events 200000] [--runs 3] [--tiers raw,runner,batch]

``--topic T`` reuses a filled topic (and prints one line per run), e.g. to compare two checkouts
on the same records: ``PYTHONPATH=<checkout> python -m bench.consumer --topic T --tiers runner``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from bench.peers.common import IDLE_S, Meter, TierError
from bench.producer import new_topic, small
from evstream.consumers import ConsumerRunner, ConsumerSettings, Handlers, MessageContext
from evstream.endpoints import kafka_settings, registry_settings
from evstream.producers import EventProducer
from evstream.schemas.domain import PaymentCaptured
from evstream.stack import LocalStack

Rate = tuple[float, float]  # events/s, CPU us/event


def raw_run(bootstrap: str, topic: str, count: int) -> Rate:
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


def drain_rate(consumer: Consumer, count: int) -> Rate:
    """Consume ``count`` records in batches of 1000; events/s from the first record. Closes it."""
    meter = Meter(count)
    try:
        while meter.seen < count:
            batch = consumer.consume(1000, timeout=1.0)
            if not batch:
                meter.waiting()
            meter.tick(sum(1 for m in batch if m.error() is None))
        return meter.rate()
    finally:
        consumer.close()


def runner_run(bootstrap: str, registry_url: str, topic: str, count: int, *, batch: bool = False) -> Rate:
    """ConsumerRunner with a no-op handler (or ``@on_batch`` one) until ``count`` are handled."""
    handlers = Handlers()
    meter = Meter(count)

    if batch:

        @handlers.on_batch(PaymentCaptured)
        def handle_batch(events: list[PaymentCaptured]) -> None:
            if meter.tick(len(events)):
                runner.stop()

    else:

        @handlers.on(PaymentCaptured)
        def handle(event: PaymentCaptured, ctx: MessageContext) -> None:
            if meter.tick():
                runner.stop()

    runner = ConsumerRunner(
        f"bench-{uuid.uuid4().hex[:8]}",
        handlers,
        topics=[topic],
        kafka=kafka_settings(bootstrap),
        registry=registry_settings(registry_url),
        settings=ConsumerSettings(batch_size=1000, gc_freeze=True),  # as `evstream consume` runs
    )
    stats = runner.run(until_idle_s=IDLE_S)  # stopped by the handler at ``count``
    if stats.handled != count:
        raise TierError(f"handled {stats.handled:,} of {count:,} ({stats})")
    return meter.rate()


def fill(bootstrap: str, registry_url: str, count: int) -> str:
    """A fresh 6-partition topic of ``count`` ~100 B PaymentCaptured published by EventProducer
    (envelope headers, registry-framed Avro, keyed by order id), and its dead-letter topic."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = new_topic(admin)
    pool = [small(i) for i in range(10_000)]
    with EventProducer(kafka=kafka_settings(bootstrap), registry=registry_settings(registry_url)) as producer:
        for i in range(count):
            producer.publish(pool[i % len(pool)], topic=topic)
        if producer.flush(120) != 0:
            raise TierError(f"{topic}: filling it timed out")
    dead_letter_topic(admin, topic)
    return topic


def dead_letter_topic(admin: AdminClient, topic: str) -> None:
    """The runner checks its dead-letter topic exists."""
    dlq = f"{topic}.dlq"
    if not topic_exists(admin, dlq):
        admin.create_topics([NewTopic(dlq, num_partitions=1, replication_factor=-1)])[dlq].result(30)
    while not topic_exists(admin, dlq):
        time.sleep(0.1)


def topic_exists(admin: AdminClient, name: str) -> bool:
    meta = admin.list_topics(name, timeout=10).topics.get(name)
    return meta is not None and meta.error is None and bool(meta.partitions)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tiers", default="raw,runner,batch")
    parser.add_argument("--topic", help="an already filled topic of --events records")
    args = parser.parse_args()
    stack = LocalStack().state()
    bootstrap, registry_url = stack.bootstrap_servers, stack.registry_url or ""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = args.topic or fill(bootstrap, registry_url, args.events)
    dead_letter_topic(admin, topic)  # a given topic may not have one yet
    tiers: dict[str, Callable[[], Rate]] = {
        "raw": lambda: raw_run(bootstrap, topic, args.events),
        "runner": lambda: runner_run(bootstrap, registry_url, topic, args.events),
        "batch": lambda: runner_run(bootstrap, registry_url, topic, args.events, batch=True),
    }
    chosen = args.tiers.split(",")
    results: dict[str, list[Rate]] = {t: [] for t in chosen}
    for _ in range(args.runs):
        for tier in chosen:
            results[tier].append(tiers[tier]())
            if args.topic:
                rate, cpu = results[tier][-1]
                print(f"{tier} {rate:.0f} ev/s {cpu:.1f} us/event", flush=True)
    print(f"topic {topic}; events: {args.events:,} (~100 B Avro); runs: {args.runs} (median, interleaved)")
    medians = {
        t: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
        for t, rs in results.items()
    }
    for tier, (rate, cpu) in medians.items():
        ratio = f"  x{rate / medians['raw'][0]:.2f} of raw" if "raw" in medians else ""
        print(f"{tier:7s} {rate:10,.0f} ev/s  CPU {cpu:5.1f} us/event{ratio}")


if __name__ == "__main__":
    main()
