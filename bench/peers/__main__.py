"""Run the tiers of bench/peers side by side and check issue 17's targets; see bench/peers/__init__.py."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from bench.consumer import fill
from bench.peers.common import PRODUCER, Payment
from bench.producer import new_topic
from evstream.producers import ProducerSettings
from evstream.schemas.domain import PaymentCaptured
from evstream.stack import LocalStack

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


@dataclass(frozen=True)
class Venv:
    """A peer's own venv, made from its pinned requirements when missing or stale."""

    path: Path
    requirements: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def ensure(self) -> None:
        wanted = hashlib.sha256(self.requirements.read_bytes()).hexdigest()
        stamp = self.path / ".bench-requirements"
        if self.python.exists() and stamp.exists() and stamp.read_text() == wanted:
            return
        print(
            f"making {self.path.relative_to(ROOT)} from {self.requirements.relative_to(ROOT)} ...", flush=True
        )
        if not self.python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(self.path)], check=True)
        subprocess.run(
            [str(self.python), "-m", "pip", "install", "-q", "-r", str(self.requirements)], check=True
        )
        stamp.write_text(wanted)


LOCAL = Venv(Path(sys.prefix), ROOT / "pyproject.toml")  # evstream's own: never (re)made here
FASTSTREAM = Venv(BENCH / ".venv-faststream", BENCH / "peers" / "requirements-faststream.txt")
QUIX = Venv(BENCH / ".venv-quix", BENCH / "quix" / "requirements.txt")  # shared with bench/streams.py


@dataclass(frozen=True)
class Tier:
    name: str  # as the tier module knows it
    label: str  # in the table
    workload: str  # consume | produce
    venv: Venv
    module: str


TIERS = [
    Tier("raw-consume", "raw confluent-kafka (bytes, no decode)", "consume", LOCAL, "local_tiers"),
    Tier(
        "confluent-consume",
        "confluent DeserializingConsumer + AvroDeserializer + model_validate",
        "consume",
        LOCAL,
        "local_tiers",
    ),
    Tier(
        "faststream-consume", "FastStream subscriber, one by one", "consume", FASTSTREAM, "faststream_tiers"
    ),
    Tier(
        "faststream-batch",
        "FastStream batch subscriber (max_records=1000)",
        "consume",
        FASTSTREAM,
        "faststream_tiers",
    ),
    Tier("quix-consume", "Quix Streams dataframe -> model_validate", "consume", QUIX, "quix_tiers"),
    Tier(
        "evstream-consume", "evstream ConsumerRunner, single-event handler", "consume", LOCAL, "local_tiers"
    ),
    Tier("evstream-batch", "evstream ConsumerRunner, @handlers.on_batch", "consume", LOCAL, "local_tiers"),
    Tier("raw-produce", "raw confluent-kafka Producer (pre-encoded Avro)", "produce", LOCAL, "local_tiers"),
    Tier(
        "confluent-produce", "confluent SerializingProducer + AvroSerializer", "produce", LOCAL, "local_tiers"
    ),
    Tier(
        "faststream-produce",
        "FastStream publisher (AvroSerializer bytes, no_confirm)",
        "produce",
        FASTSTREAM,
        "faststream_tiers",
    ),
    Tier("quix-produce", "Quix Streams producer + AvroSerializer", "produce", QUIX, "quix_tiers"),
    Tier("evstream-publish", "evstream EventProducer.publish", "produce", LOCAL, "local_tiers"),
    Tier(
        "evstream-bulk", "evstream EventProducer.publish_bulk (1000 a call)", "produce", LOCAL, "local_tiers"
    ),
]

# issue 17, deliverable 5: (what, tier, over tier, at least)
TARGETS = [
    (
        "consume, single-event handler vs confluent deserializer + model_validate",
        "evstream-consume",
        "confluent-consume",
        1.5,
    ),
    (
        "consume, single-event handler vs FastStream batch subscriber",
        "evstream-consume",
        "faststream-batch",
        1.0,
    ),
    ("consume, batch handler vs FastStream batch subscriber", "evstream-batch", "faststream-batch", 1.5),
    (
        "produce, publish vs SerializingProducer + AvroSerializer",
        "evstream-publish",
        "confluent-produce",
        1.2,
    ),
    ("produce, publish vs raw", "evstream-publish", "raw-produce", 0.25),
    (
        "produce, publish_bulk vs SerializingProducer + AvroSerializer",
        "evstream-bulk",
        "confluent-produce",
        1.2,
    ),
    ("produce, publish_bulk vs raw", "evstream-bulk", "raw-produce", 0.25),
]


class RunFailedError(SystemExit):
    pass


@dataclass(frozen=True)
class Run:
    rate: float  # events/s
    cpu: float  # process CPU us/event (every thread)
    thread: float  # of which the thread that handles (or publishes) the events


@dataclass
class Bench:
    bootstrap: str
    registry: str
    events: int
    schema: str
    consume_topic: str = ""
    results: dict[str, list[Run]] = field(default_factory=dict)

    def run(self, tier: Tier, round_: int, *, profile: Path | None = None) -> Run:
        """One run of ``tier`` in its own process (its timed window under cProfile, written to
        ``profile``, if given), verified."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        topic = self.consume_topic if tier.workload == "consume" else new_topic(admin)
        command = [
            str(tier.venv.python), "-m", f"bench.peers.{tier.module}", tier.name,
            "--bootstrap", self.bootstrap, "--registry", self.registry, "--topic", topic,
            "--events", str(self.events), "--schema", self.schema,
        ]  # fmt: skip
        env = {**os.environ, **({"BENCH_PROFILE": str(profile)} if profile else {})}
        try:
            done = subprocess.run(
                command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise RunFailedError(f"{tier.name} (round {round_}): no result in {exc.timeout:.0f} s") from exc
        found = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not found:
            tail = "\n    ".join((done.stderr or done.stdout).strip().splitlines()[-8:])
            raise RunFailedError(f"{tier.name} (round {round_}) failed (exit {done.returncode}):\n    {tail}")
        result = json.loads(found[-1][len("RESULT ") :])
        if tier.workload == "produce":
            self.verify_produced(admin, tier, topic)
        return Run(float(result["rate"]), float(result["cpu_us"]), float(result.get("thread_cpu_us", 0.0)))

    def verify_produced(self, admin: AdminClient, tier: Tier, topic: str) -> None:
        """``events`` + the warm-up event are on the topic; the last one decodes (registry-framed
        Avro the registry knows) into the model."""
        probe = Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": "peers-verify", "enable.auto.commit": False}
        )
        try:
            ends = [probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(6)]
            written = sum(high - low for low, high in ends)
            if written != self.events + 1:
                raise RunFailedError(f"{tier.name}: {written:,} records on {topic}, not {self.events + 1:,}")
            partition = max(range(6), key=lambda p: ends[p][1])
            probe.assign([TopicPartition(topic, partition, ends[partition][1] - 1)])
            msg = None
            deadline = time.monotonic() + 30
            while msg is None and time.monotonic() < deadline:
                msg = probe.poll(1.0)
            if msg is None or msg.error() is not None:
                raise RunFailedError(f"{tier.name}: could not read back the last record of {topic}")
            deserialize = AvroDeserializer(SchemaRegistryClient({"url": self.registry}))
            Payment.model_validate(deserialize(msg.value(), SerializationContext(topic, MessageField.VALUE)))
        finally:
            probe.close()
        admin.delete_topics([topic])


def check_same_producer_settings() -> None:
    """The peers' producer config must still be evstream's defaults."""
    ours = ProducerSettings().librdkafka()
    differ = {k: (v, ours.get(k)) for k, v in PRODUCER.items() if ours.get(k) != v}
    if differ:
        raise RunFailedError(f"bench.peers.common.PRODUCER differs from evstream's defaults: {differ}")


def table(bench: Bench, tiers: list[Tier], rounds: int) -> list[str]:
    lines = [
        "| workload | tier | events/s | CPU us/event | of which the handling thread | events/s per round |",
        "|---|---|---:|---:|---:|---|",
    ]
    for tier in tiers:
        runs = bench.results[tier.name]
        rate, cpu, thread = (
            statistics.median(getattr(r, f) for r in runs) for f in ("rate", "cpu", "thread")
        )
        per_round = ", ".join(f"{r.rate / 1000:.1f}k" for r in runs)
        lines.append(
            f"| {tier.workload} | {tier.label} | {rate:,.0f} | {cpu:.1f} | {thread:.1f} | {per_round} |"
        )
    return lines


def targets(bench: Bench) -> list[str]:
    lines = []
    for what, ours, theirs, wanted in TARGETS:
        if ours not in bench.results or theirs not in bench.results:
            continue
        a, b = bench.results[ours], bench.results[theirs]
        ratio = statistics.median(r.rate for r in a) / statistics.median(r.rate for r in b)
        per_round = ", ".join(f"{x.rate / y.rate:.2f}" for x, y in zip(a, b, strict=True))
        verdict = "**met**" if ratio >= wanted else "**missed**"
        lines.append(f"- {what}: {ratio:.2f}x (target >= {wanted}x): {verdict} (per round: {per_round})")
    return lines


def profile(bench: Bench, tier: Tier, top: int = 30) -> None:
    """``tier`` once more, its timed window under cProfile (the metering thread only): the
    functions with the most own time in us/event of the profiled run, and scaled to the
    unprofiled CPU us/event of the rounds (cProfile's overhead removed pro rata)."""
    path = Path(tempfile.gettempdir()) / f"peers-{tier.name}.prof"
    profiled = bench.run(tier, 0, profile=path)
    plain = bench.results.get(tier.name)
    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for _cc, _nc, tt, _ct, _callers in entries.values()) / bench.events * 1e6
    thread = statistics.median(r.thread for r in plain) if plain else profiled.thread
    scale = thread / total
    print(
        f"\n{tier.name} under cProfile: {profiled.rate:,.0f} ev/s, CPU {profiled.cpu:.1f} us/event, of which"
        f" the handling thread {profiled.thread:.1f} (functions' own time {total:.1f}); other threads"
        f" {profiled.cpu - profiled.thread:.1f} us/event. Scaled: x{scale:.2f}, to the handling thread's"
        f" {thread:.1f} us/event unprofiled"
    )
    print(f"{'own us/ev':>9} {'scaled':>7} {'cum scaled':>10} {'calls/ev':>8}  function")
    ranked = sorted(entries.items(), key=lambda kv: -kv[1][2])[:top]
    for (file, line, name), (_cc, calls, tt, ct, _callers) in ranked:
        where = f"{Path(file).name}:{line}" if line else file
        own = tt / bench.events * 1e6
        cum = ct / bench.events * 1e6 * scale
        per_event = f"{own:9.2f} {own * scale:7.2f} {cum:10.2f} {calls / bench.events:8.2f}"
        print(f"{per_event}  {name} ({where})")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers",
        description=sys.modules["bench.peers"].__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiers", default=",".join(t.name for t in TIERS), help="comma-separated")
    parser.add_argument(
        "--topic", help="an already filled consume topic of --events records (bench.consumer's)"
    )
    parser.add_argument(
        "--profile",
        default="",
        help="tiers run once more under cProfile after the rounds, e.g. evstream-consume,evstream-publish",
    )
    args = parser.parse_args()
    chosen = [t for t in TIERS if t.name in args.tiers.split(",")]
    profiled = [t for t in TIERS if t.name in args.profile.split(",")]
    unknown = set(args.tiers.split(",") + [p for p in args.profile.split(",") if p]) - {t.name for t in TIERS}
    if unknown:
        parser.error(f"unknown tiers: {', '.join(sorted(unknown))}")
    check_same_producer_settings()
    for venv in {t.venv for t in chosen + profiled} - {LOCAL}:
        venv.ensure()
    stack = LocalStack().state()
    bench = Bench(
        stack.bootstrap_servers,
        stack.registry_url or "",
        args.events,
        json.dumps(PaymentCaptured.avro_schema_dict()),
    )
    if any(t.workload == "consume" for t in chosen + profiled):
        bench.consume_topic = args.topic or fill(bench.bootstrap, bench.registry, args.events)
        print(f"consume topic {bench.consume_topic}: {args.events:,} events", flush=True)
    for round_ in range(args.rounds):
        order = chosen[round_ % len(chosen) :] + chosen[: round_ % len(chosen)]  # rotated each round
        for tier in order:
            run = bench.run(tier, round_)
            bench.results.setdefault(tier.name, []).append(run)
            print(
                f"round {round_ + 1} {tier.name:20s} {run.rate:10,.0f} ev/s  CPU {run.cpu:6.1f} us/event"
                f" (handling thread {run.thread:5.1f})",
                flush=True,
            )
    print()
    print(
        f"{args.events:,} ~100 B Avro events per run; {args.rounds} interleaved round(s), medians; "
        f"each tier in its own process; broker {bench.bootstrap}"
    )
    print("\n".join(table(bench, chosen, args.rounds)))
    print()
    print("\n".join(targets(bench)))
    for tier in profiled:
        profile(bench, tier)


if __name__ == "__main__":
    main()
