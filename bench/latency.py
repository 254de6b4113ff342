"""End-to-end latency: publish -> handler entry, at fixed rates, ConsumerRunner vs a raw consumer.

A publisher process sends ~100 B ``PaymentCaptured`` events with :class:`EventProducer` (default
settings: linger 10 ms, acks=all, idempotence) at a fixed rate into a fresh 6-partition topic; this
process consumes them. The publish time (``perf_counter_ns``, CLOCK_MONOTONIC, the same clock in
both processes) travels in the ``payment_id``; the consumer records ``now - publish time`` when
the handler is entered (evstream) or the record is returned (raw). Tiers, interleaved per rate
and round:

- **raw**: confluent-kafka ``Consumer.poll(0.1)`` one record at a time (the latency floor of a
  peer that hands records over as they arrive; the value is not decoded, the id is read from the
  Avro bytes' position-independent suffix);
- **evstream**: :class:`ConsumerRunner` with its default settings and a no-op handler;
- **evstream-wait**: the same with ``batch_wait_s=0.5`` (wait for a batch of ``batch_size`` to fill:
  the behaviour before issue 17, now an opt-in trade of latency for batch size).

Reports p50/p99/max in ms per tier and rate; every published event must be seen. Run (stack up):

    .venv/bin/python -m bench.latency [--rates 1000,5000] [--seconds 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from bench.consumer import topic_exists
from bench.peers.common import AT
from bench.producer import new_topic
from evstream.consumers import ConsumerRunner, ConsumerSettings, Handlers
from evstream.endpoints import kafka_settings, registry_settings
from evstream.producers import EventProducer
from evstream.schemas.domain import Currency, Money, PaymentCaptured, PaymentMethod
from evstream.stack import LocalStack

WARMUP = "warmup"


SUFFIX = "-3ds2-eu-west-1"


def event(payment_id: str, i: int = 0) -> PaymentCaptured:
    return PaymentCaptured(
        order_id=f"order-{i % 10_000:05d}-2026-11-27-web-checkout",
        payment_id=payment_id,
        amount=Money(amount_minor=1999, currency=Currency.EUR),
        method=PaymentMethod.CARD,
        captured_at=AT,
    )


class Probe:
    """The latencies seen (seconds): the publish time travels in the payment id."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.warm = threading.Event()

    def seen(self, payment_id: str) -> None:
        now = time.perf_counter_ns()  # CLOCK_MONOTONIC: the same clock in every process
        if not payment_id.startswith("pay-"):
            self.warm.set()
            return
        self.latencies.append((now - int(payment_id[4 : payment_id.index("-", 4)])) / 1e9)


def run_evstream(
    bootstrap: str, registry_url: str, topic: str, probe: Probe, stop: threading.Event, wait: float = 0.0
) -> None:
    handlers = Handlers()

    @handlers.on(PaymentCaptured)
    def handle(ev: PaymentCaptured) -> None:
        probe.seen(ev.payment_id)

    runner = ConsumerRunner(
        f"lat-{uuid.uuid4().hex[:8]}",
        handlers,
        topics=[topic],
        kafka=kafka_settings(bootstrap),
        registry=registry_settings(registry_url),
        settings=ConsumerSettings(auto_offset_reset="latest", batch_wait_s=wait),
    )

    def stopper() -> None:
        stop.wait()
        runner.stop()

    threading.Thread(target=stopper, daemon=True).start()
    runner.run()


def run_evstream_wait(
    bootstrap: str, registry_url: str, topic: str, probe: Probe, stop: threading.Event
) -> None:
    run_evstream(bootstrap, registry_url, topic, probe, stop, wait=0.5)


def run_raw(bootstrap: str, _registry_url: str, topic: str, probe: Probe, stop: threading.Event) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"lat-raw-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "latest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    marker, suffix = b"pay-", SUFFIX.encode()
    try:
        while not stop.is_set():
            msg = consumer.poll(0.1)
            if msg is None or msg.error() is not None:
                continue
            value = msg.value() or b""
            # payment_id is an Avro string: find it by its prefix (no decoding on this tier)
            at = value.find(marker)
            end = value.find(suffix, at)
            probe.seen(value[at : end + len(suffix)].decode() if at >= 0 and end > 0 else WARMUP)
    finally:
        consumer.close()


TIERS: dict[str, Callable[[str, str, str, Probe, threading.Event], None]] = {
    "raw": run_raw,
    "evstream": run_evstream,
    "evstream-wait": run_evstream_wait,
}


def measure(
    tier: str, bootstrap: str, registry_url: str, producer: EventProducer, rate: int, seconds: float
) -> list[float]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = new_topic(admin)
    if tier.startswith("evstream"):  # the runner checks its dead-letter topic exists
        dlq = f"{topic}.dlq"
        admin.create_topics([NewTopic(dlq, num_partitions=1, replication_factor=-1)])[dlq].result(30)
        while not topic_exists(admin, dlq):
            time.sleep(0.1)
    probe, stop = Probe(), threading.Event()
    thread = threading.Thread(target=TIERS[tier], args=(bootstrap, registry_url, topic, probe, stop))
    thread.start()
    deadline = time.monotonic() + 120
    while not probe.warm.is_set():  # assigned and reading: warm-up events until one is seen
        if time.monotonic() > deadline:
            raise RuntimeError(f"{tier}: no warm-up event seen in 120 s")
        producer.publish(event(WARMUP), topic=topic)
        producer.flush(5)
        probe.warm.wait(0.5)
    time.sleep(0.5)
    count = int(rate * seconds)
    # the publisher is its own process, as a service's would be
    command = ["-m", "bench.latency", "--publish", topic, "--rates", str(rate), "--seconds", str(seconds)]
    subprocess.run([sys.executable, *command], check=True)
    deadline = time.monotonic() + 30
    while len(probe.latencies) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(30)
    assert len(probe.latencies) >= count, f"{tier}@{rate}: saw {len(probe.latencies)} of {count}"
    return probe.latencies


def publish(bootstrap: str, registry_url: str, topic: str, rate: int, seconds: float) -> None:
    count = int(rate * seconds)
    with EventProducer(kafka=kafka_settings(bootstrap), registry=registry_settings(registry_url)) as producer:
        producer.publish(event(WARMUP), topic=topic).result(10)  # registry lookups done
        start = time.perf_counter()
        for i in range(count):
            wait = start + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            producer.publish(event(f"pay-{time.perf_counter_ns()}-{i:09d}{SUFFIX}", i), topic=topic)
        assert producer.flush(30) == 0


def summary(values: list[float]) -> str:
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    return f"p50 {q(0.5):7.1f} ms  p99 {q(0.99):7.1f} ms  max {ordered[-1] * 1000:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="1000,5000")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tiers", default="raw,evstream,evstream-wait")
    parser.add_argument("--publish", metavar="TOPIC", help=argparse.SUPPRESS)  # the publisher process
    args = parser.parse_args()
    stack = LocalStack().state()
    bootstrap, registry_url = stack.bootstrap_servers, stack.registry_url or ""
    if args.publish:
        publish(bootstrap, registry_url, args.publish, int(args.rates), args.seconds)
        return
    rates = [int(r) for r in args.rates.split(",")]
    tiers = args.tiers.split(",")
    results: dict[tuple[str, int], list[float]] = {}
    p99s: dict[tuple[str, int], list[float]] = {}
    with EventProducer(kafka=kafka_settings(bootstrap), registry=registry_settings(registry_url)) as producer:
        for _ in range(args.rounds):
            for rate in rates:
                for tier in tiers:
                    lat = measure(tier, bootstrap, registry_url, producer, rate, args.seconds)
                    results.setdefault((tier, rate), []).extend(lat)
                    p99s.setdefault((tier, rate), []).append(sorted(lat)[int(0.99 * len(lat))] * 1000)
                    print(f"  {tier:9s} @ {rate:5d}/s  {summary(lat)}", flush=True)
    print(f"publish -> handler entry; {args.rounds} round(s) x {args.seconds:.0f} s per rate and tier")
    for (tier, rate), lat in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        rounds = ", ".join(f"{p:.1f}" for p in p99s[(tier, rate)])
        print(
            f"{tier:9s} @ {rate:5d}/s  n={len(lat):6d}  {summary(lat)}  "
            f"(p99 per round: {rounds}; median {statistics.median(p99s[(tier, rate)]):.1f})"
        )


if __name__ == "__main__":
    main()
