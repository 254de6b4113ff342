"""Bounded replay throughput and memory: BoundedReplay into a no-op handler vs raw consume.

A 6-partition topic is filled with N copies of real ~100 B ``PaymentCaptured`` records (value and
envelope headers taken from one record EventProducer wrote, re-sent with a raw producer so a
million records are written in seconds). Then, on the same broker in the same run:

- C: raw confluent-kafka ``consume(num_messages=1000)`` over exactly [earliest, end) by assignment;
- R: ``BoundedReplay`` over the same range: envelope, Avro decode via the registry id, model
  validation, a no-op handler, progress committed after each batch.

Peak RSS is sampled every 0.5 s from /proc/self/status during R, and reported at 10 % steps of
progress, to show memory does not grow with the size of the replay. Run (local stack up):

    .venv/bin/python -m bench.replay [--events 1000000] [--rss-events 5000000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.consumer import drain_rate
from bench.producer import new_topic, small
from evstream.consumers import Handlers, MessageContext
from evstream.consumers.replay import BoundedReplay
from evstream.endpoints import kafka_settings, registry_settings
from evstream.producers import EventProducer
from evstream.schemas.domain import PaymentCaptured
from evstream.stack import LocalStack
from tests.kafka_helpers import read_records


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fill(bootstrap: str, registry_url: str, count: int) -> str:
    topic = new_topic(AdminClient({"bootstrap.servers": bootstrap}))
    with EventProducer(kafka=kafka_settings(bootstrap), registry=registry_settings(registry_url)) as producer:
        producer.publish(small(0), topic=topic).result(timeout=30)
    (sample,) = read_records(bootstrap, [topic], 1)
    value, headers = sample.value(), sample.headers()
    raw = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4"})
    for i in range(count - 1):
        while True:
            try:
                raw.produce(topic, value=value, key=f"order-{i % 10_000}", headers=headers)
                break
            except BufferError:
                raw.poll(0.05)
        if i % 10_000 == 0:
            raw.poll(0)
    assert raw.flush(120) == 0
    return topic


def raw_run(bootstrap: str, topic: str, count: int) -> float:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{uuid.uuid4().hex[:8]}"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(6)])
    return drain_rate(consumer, count)[0]


def replay_run(
    bootstrap: str, registry_url: str, topic: str, count: int
) -> tuple[float, list[tuple[int, float]]]:
    handlers = Handlers()

    @handlers.on(PaymentCaptured)
    def handle(event: PaymentCaptured, ctx: MessageContext) -> None:
        return None

    samples: list[tuple[int, float]] = []
    done = threading.Event()
    processed = [0]

    def sample() -> None:
        while not done.wait(0.5):
            samples.append((processed[0], rss_mb()))

    sampler = threading.Thread(target=sample, daemon=True)
    replay = BoundedReplay(
        topic=topic,
        start="earliest",
        handlers=handlers,
        kafka=kafka_settings(bootstrap),
        registry=registry_settings(registry_url),
    )
    started = time.perf_counter()
    sampler.start()

    def progress(n: int, _total: int) -> None:
        processed[0] = n

    result = replay.run(progress=progress)
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    assert result.processed == count, result
    return count / elapsed, samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rss-events", type=int, default=5_000_000)
    parser.add_argument("--rss-topic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_topic:
        rss_only(args.rss_topic, args.rss_events)
        return
    stack = LocalStack().state()
    bootstrap, registry_url = stack.bootstrap_servers, stack.registry_url or ""
    topic = fill(bootstrap, registry_url, args.events)
    c = raw_run(bootstrap, topic, args.events)
    r, _ = replay_run(bootstrap, registry_url, topic, args.events)
    print(f"events: {args.events:,} (~100 B Avro)")
    print(
        f"C raw consume: {c:,.0f} ev/s   R BoundedReplay (decode + validate + no-op handler): "
        f"{r:,.0f} ev/s   R/C {r / c:.2f}"
    )
    if args.rss_events:
        big = fill(bootstrap, registry_url, args.rss_events)
        # A fresh process: this one's RSS still holds what filling the topics allocated.
        out = subprocess.run(
            [sys.executable, "-m", "bench.replay", "--rss-topic", big, "--rss-events", str(args.rss_events)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        print(out, end="")


def rss_only(topic: str, count: int) -> None:
    stack = LocalStack().state()
    rate, samples = replay_run(stack.bootstrap_servers, stack.registry_url or "", topic, count)
    if samples:
        peak = max(mb for _, mb in samples)
        print(f"RSS over a {count:,}-event replay in its own process ({rate:,.0f} ev/s): peak {peak:.0f} MB")
        steps = []
        for pct in range(10, 101, 10):
            goal = count * pct // 100
            at = next((mb for n, mb in samples if n >= goal), samples[-1][1])
            steps.append(f"{pct}%: {at:.0f} MB")
        print("  " + ", ".join(steps))


if __name__ == "__main__":
    main()
