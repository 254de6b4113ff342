"""Bounded replay: raw assign+consume vs the consumer runner vs BoundedReplay, and replay memory.

A 6-partition topic is filled with N copies of a real ~100 B ``PaymentCaptured`` record (value
and envelope headers taken from one record EventProducer wrote, re-sent with a raw producer so
millions of records are written in seconds). Then, on the same broker in the same run, rounds
interleaved (raw, runner, replay, raw, ...), medians of ``--rounds``:

- raw: confluent-kafka ``assign`` + ``consume(num_messages=1000)`` over the whole topic, no decode;
- runner: ``ConsumerRunner`` (a fresh group, ``gc_freeze`` on as ``evstream consume`` runs it):
  envelope check, Avro decode, model validation, a no-op handler, offsets stored and committed;
- replay: ``BoundedReplay`` over [earliest, end) captured at start: the same per-record work
  into a no-op handler, progress committed after each batch (library defaults).

Events/s run from the first record handed over to the last (the runner's and the replay's
start-up, bounds lookup and group join are not timed); CPU us/event is the process's CPU time
(librdkafka's threads included) over the same span. Every tier must see exactly N records.

Memory: a fresh process replays a ``--rss-events`` topic (default 5,000,000) with BoundedReplay,
sampling VmRSS every 0.2 s against progress; printed at 10 % steps with the peak, and the target
(peak minus RSS at 10 % < 30 MB) checked. A raw assign+consume of the same topic with the
replay's consumer configuration, in its own process, is the floor (librdkafka, the allocator).

Run (local stack up; one benchmark at a time on a shared machine):

    EVSTREAM_STACK_DIR=$PWD/.stack flock /tmp/evstream-bench.lock \\
        .venv/bin/python -m bench.replay [--events 1000000] [--rounds 3] [--rss-events 5000000]

``--topic T`` / ``--rss-topic T`` reuse filled topics (of exactly --events / --rss-events
records); topics this run created are deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.consumer import dead_letter_topic, drain_rate, runner_run
from bench.producer import new_topic, small
from evstream.consumers import Handlers
from evstream.consumers.replay import BoundedReplay
from evstream.consumers.replay.bounded import consumer_config
from evstream.endpoints import kafka_settings, registry_settings
from evstream.producers import EventProducer
from evstream.schemas.domain import PaymentCaptured
from evstream.stack import LocalStack
from tests.kafka_helpers import read_records

Rate = tuple[float, float]  # events/s, CPU us/event
RSS_TARGET_MB = 30.0


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


def replay_consumer_config(bootstrap: str) -> dict[str, object]:
    """BoundedReplay's own consumer configuration (for the raw memory floor)."""
    return consumer_config({"bootstrap.servers": bootstrap}, f"raw-{uuid.uuid4().hex[:8]}")


def raw_run(bootstrap: str, topic: str, count: int) -> Rate:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{uuid.uuid4().hex[:8]}"})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(6)])
    return drain_rate(consumer, count)


class Marks:
    """First and last handler call: wall clock and process CPU."""

    def __init__(self) -> None:
        self.first = self.last = self.cpu_first = self.cpu_last = 0.0
        self.count = 0

    def hit(self) -> None:
        now = time.perf_counter()
        if not self.count:
            self.first, self.cpu_first = now, time.process_time()
        self.count += 1
        self.last = now

    def rate(self, count: int) -> Rate:
        self.cpu_last = time.process_time()
        return count / (self.last - self.first), (self.cpu_last - self.cpu_first) / count * 1e6


def replay_run(
    bootstrap: str,
    registry_url: str,
    topic: str,
    count: int,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Rate:
    handlers = Handlers()
    marks = Marks()

    @handlers.on(PaymentCaptured)
    def handle(event: PaymentCaptured) -> None:
        marks.hit()

    replay = BoundedReplay(
        topic=topic,
        start="earliest",
        handlers=handlers,
        kafka=kafka_settings(bootstrap),
        registry=registry_settings(registry_url),
    )
    result = replay.run(progress=progress)
    rate = marks.rate(count)
    assert (result.processed, result.delivered, marks.count) == (count, count, count), result
    return rate


# ---------------------------------------------------------------- memory (own process)


def rss_child(kind: str, topic: str, count: int) -> None:
    """Read ``count`` records of ``topic`` sampling RSS; print one JSON line."""
    stack = LocalStack().state()
    samples: list[tuple[int, float]] = []
    done = threading.Event()
    processed = [0]

    def sample() -> None:
        while not done.wait(0.2):
            samples.append((processed[0], rss_mb()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    if kind == "replay":

        def progress(n: int, _total: int) -> None:
            processed[0] = n

        rate = replay_run(stack.bootstrap_servers, stack.registry_url or "", topic, count, progress=progress)[
            0
        ]
    else:
        consumer = Consumer(replay_consumer_config(stack.bootstrap_servers))
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(6)])
        seen = 0
        while seen < count:
            seen += sum(1 for m in consumer.consume(1000, 1.0) if m.error() is None)
            processed[0] = seen
        consumer.close()
        assert seen == count, (seen, count)
        rate = count / (time.perf_counter() - started)
    done.set()
    sampler.join()
    print(json.dumps({"rate": rate, "samples": samples}))


def rss_report(kind: str, topic: str, count: int) -> tuple[float, float]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.replay",
            "--rss-child",
            kind,
            "--rss-topic",
            topic,
            "--rss-events",
            str(count),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data = json.loads(out.strip().splitlines()[-1])
    samples: list[tuple[int, float]] = [(int(n), float(mb)) for n, mb in data["samples"]]
    steps = []
    for pct in range(10, 101, 10):
        goal = count * pct // 100
        at = next((mb for n, mb in samples if n >= goal), samples[-1][1])
        steps.append(at)
    peak = max(mb for _, mb in samples)
    print(f"{kind:6s} over {count:,} records in its own process ({data['rate']:,.0f} ev/s):")
    print("  RSS at 10 %..100 %: " + ", ".join(f"{mb:.0f}" for mb in steps) + " MB")
    print(f"  at 10 %: {steps[0]:.0f} MB, peak: {peak:.0f} MB, peak - at 10 %: {peak - steps[0]:+.0f} MB")
    return steps[0], peak


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiers", default="raw,runner,replay")
    parser.add_argument("--rss-events", type=int, default=5_000_000, help="0: skip the memory run")
    parser.add_argument("--topic", help="a filled topic of exactly --events records")
    parser.add_argument("--rss-topic", help="a filled topic of exactly --rss-events records")
    parser.add_argument("--keep", action="store_true", help="keep the topics this run created")
    parser.add_argument("--rss-child", choices=["replay", "raw"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.rss_topic, args.rss_events)
        return
    stack = LocalStack().state()
    bootstrap, registry_url = stack.bootstrap_servers, stack.registry_url or ""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    created: list[str] = []
    try:
        topic = args.topic
        if topic is None and args.events:
            topic = fill(bootstrap, registry_url, args.events)
            created.append(topic)
        if topic is not None and args.rounds:
            dead_letter_topic(admin, topic)  # the runner checks its dead-letter topic exists
            if args.topic is None:
                created.append(f"{topic}.dlq")
            rates(bootstrap, registry_url, topic, args.events, args.rounds, args.tiers.split(","))
        if args.rss_events:
            big = args.rss_topic
            if big is None:
                big = fill(bootstrap, registry_url, args.rss_events)
                created.append(big)
            print(f"memory, topic {big}:")
            rss_report("raw", big, args.rss_events)
            at10, peak = rss_report("replay", big, args.rss_events)
            verdict = "met" if peak - at10 < RSS_TARGET_MB else "MISSED"
            print(f"target replay peak - at 10 % < {RSS_TARGET_MB:.0f} MB: {verdict} ({peak - at10:+.0f} MB)")
    finally:
        if created and not args.keep:
            for future in admin.delete_topics(created).values():
                future.result(30)


def rates(bootstrap: str, registry_url: str, topic: str, count: int, rounds: int, chosen: list[str]) -> None:
    tiers: dict[str, Callable[[], Rate]] = {
        "raw": lambda: raw_run(bootstrap, topic, count),
        "runner": lambda: runner_run(bootstrap, registry_url, topic, count),
        "replay": lambda: replay_run(bootstrap, registry_url, topic, count),
    }
    results: dict[str, list[Rate]] = {t: [] for t in chosen}
    for _ in range(rounds):
        for tier in chosen:
            results[tier].append(tiers[tier]())
            rate, cpu = results[tier][-1]
            print(f"  {tier} {rate:,.0f} ev/s {cpu:.1f} us/event", flush=True)
    medians = {
        t: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
        for t, rs in results.items()
    }
    print(f"topic {topic}; {count:,} records (~100 B Avro); median of {rounds} interleaved rounds")
    for tier, (rate, cpu) in medians.items():
        ratios = "".join(
            f"  x{rate / medians[base][0]:.2f} of {base}"
            for base in ("raw", "runner")
            if base in medians and base != tier
        )
        print(f"{tier:14s} {rate:10,.0f} ev/s  CPU {cpu:5.1f} us/event{ratios}")
    for base, goal in (("raw", 0.2), ("runner", 1.0)):
        if "replay" in medians and base in medians:
            ratio = medians["replay"][0] / medians[base][0]
            print(f"target replay >= {goal}x {base}: {'met' if ratio >= goal else 'MISSED'} (x{ratio:.2f})")


if __name__ == "__main__":
    main()
