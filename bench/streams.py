"""Stream pipeline throughput on one worker: evstream's native engine vs Quix Streams, like for
like, at least once and exactly once.

One command runs four pipelines in interleaved rounds, on the same input topic and broker:

- ``evstream-alo`` / ``evstream-eos``: ``evstream worker bench.streams:app`` (:data:`app`, an
  ``evstream.streams.App`` on evstream's native confluent-kafka engine) with
  ``EVSTREAM_STREAMS_PROCESSING_GUARANTEE=at_least_once`` / ``exactly_once``;
- ``quix-alo`` / ``quix-eos``: bench/quix/pipeline.py (Quix Streams, bench/.venv-quix) with
  ``--guarantee at-least-once`` / ``exactly-once``.

The input: the order events of a mixed stream (1 in 4 of them an ``OrderPlaced``; Avro via the
registry, evstream envelope headers) on one 6-partition topic, written once and read by every run;
the output topics have 3 partitions.

What each does per event:

- **evstream**, per order event: Avro decode (writer schema from the registry, cached per id,
  resolved against the catalog's model) and pydantic validation into the event's model, every
  order event (the others then pass by). Per ``OrderPlaced``: envelope read from the headers;
  forwarded (its bytes and envelope, re-keyed by customer) to the app's 6-partition internal topic
  ``<app>-by-customer``; read back from it (decoded, validated and its envelope read again); the
  customer's running totals per currency updated in a table (a pydantic model per key; the memory
  store unless ``EVSTREAM_STREAMS_STORE`` says otherwise; its rows written to a compacted
  changelog topic at each commit); a derived ``CustomerTierChanged`` Avro event (schema registered
  with the registry) published to the output topic with envelope headers continuing the cause's
  (derived event id, correlation and causation ids, child traceparent).
- **Quix**, per order event: Avro decode via the registry (``AvroDeserializer``: fastavro into a
  dict, no model validation); only ``OrderPlaced`` kept. Per ``OrderPlaced``: a dict of customer
  id, total and order id, JSON, through Quix's ``group_by`` repartition topic (by customer, 6
  partitions) and read back; running totals per currency in Quix's state (RocksDB, with a
  changelog topic); one JSON record of the customer's totals to the output topic.

Both commit every ``EVSTREAM_STREAMS_COMMIT_INTERVAL_S`` (evstream's setting, default 1 s; Quix's
``commit_interval`` is set to the same, its own default is 5 s); exactly once, each commit is one
Kafka transaction on both sides (derived records visible to ``read_committed`` readers then).

**Measured.** Each run is a fresh process with its own consumer group, output topic and internal
topics (deleted afterwards). The harness reads the output topic ``read_committed`` from the start
and times from the process start until it has seen one output record per ``OrderPlaced``; the
same criterion for all four, so start-up, group join and (exactly once) the last transaction's
commit are in every time. Per run:

- events/s = order events / that time; CPU us/event = the process's CPU (user + system of all
  its threads, librdkafka's included, from ``/proc/<pid>/stat``; interpreter start and imports
  too) at that moment / order events;
- the same two "after start": from the first record the pipeline wrote to its repartition
  topic (read uncommitted: the moment its processing began, after start-up, group join and
  table recovery, on both sides) to the last output, over all the order events (the rate a long
  run tends to; the exactly-once last commit is still in it);
- medians over the rounds, and evstream/Quix per guarantee against the target >= 1.5x (events/s:
  evstream's over Quix's; CPU: Quix's us/event over evstream's, so > 1 is evstream ahead too).

Round r starts with the r-th pipeline (the order rotates) to spread drift over all four. Each
process's output goes to ``<tmp>/bench-streams-<pipeline>-<id>.log`` (evstream logs at WARNING);
a failed run (process exited, or no new output for 120 s) prints its log's tail and the rounds
go on; a run that saw more outputs than OrderPlaced or exited non-zero is flagged ``!!``.
Run (local stack up)::

    python3 -m venv bench/.venv-quix && bench/.venv-quix/bin/pip install -r bench/quix/requirements.txt
    EVSTREAM_STACK_DIR=$PWD/.stack .venv/bin/python -m bench.streams [--events 60000] [--rounds 3] \
        [--only evstream-alo,quix-alo] [--profile] [--spy]

``--profile``: each run's CPU split by thread (from /proc: the main thread, which is the whole of
evstream's processing and Quix's loop; librdkafka's ``rdk:*`` threads; other live threads, the
worker's ops server; threads that exited) and a cProfile of the evstream workers' main thread
(consume calls, decode, handlers, tables, produce calls, commits; librdkafka's own threads run C
and are not in it): the top 25 by own time, of round 1, per guarantee. cProfile slows the worker:
a --profile run's rates are not the benchmark.

``--flat N``: the flatness run instead: N events on the input topic (order events: 1 in 4 is an
OrderPlaced) through the evstream pipeline (guarantee: ``EVSTREAM_STREAMS_PROCESSING_GUARANTEE``,
default at_least_once); OrderPlaced/s of the first and the last 10 % of the input (the span
between the first and the last completion among those events, from the output records'
timestamps: a completion is the derived event's send, matched to its input position by its
causation id); the same for the first and last 10 % of completions and for each tenth of them;
the worker's CPU time per OrderPlaced in the first and last 10 % of completions (from /proc: the
per-event cost, less sensitive than rates to what else the machine runs); the largest changelog
record. The topics it made are deleted afterwards.

``--spy``: sample the evstream workers with py-spy (``BENCH_PYSPY`` or ``py-spy`` on PATH; not a
dependency: ``python3 -m venv /tmp/pyspy && /tmp/pyspy/bin/pip install py-spy``) from ready to
exit, and attribute the CPU samples to the parts of an event's path (:data:`PARTS`, by the
innermost frame that matches one) and to the thread, in microseconds per OrderPlaced (each with
its 3 other order events, read and dropped). py-spy sees Python threads only: the main thread
(all the processing) and the ops server's; librdkafka's threads are in --profile's /proc split.

The evstream side is :data:`app` (``evstream worker bench.streams:app``), built on first access.
"""

from __future__ import annotations

import argparse
import functools
import os
import pstats
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

QUIX = Path(__file__).parent / ".venv-quix" / "bin" / "python"
PIPELINE = Path(__file__).parent / "quix" / "pipeline.py"

VARIANTS: dict[str, tuple[str, str]] = {
    "evstream-alo": ("evstream", "at_least_once"),
    "evstream-eos": ("evstream", "exactly_once"),
    "quix-alo": ("quix", "at-least-once"),
    "quix-eos": ("quix", "exactly-once"),
}
"""Run name -> (engine, its processing guarantee's spelling)."""

GUARANTEES = {"alo": "at least once", "eos": "exactly once"}
TARGET = 1.5
OUT_PARTITIONS = 3
STALL_S = 120.0  # a run with no new output for this long has failed


def build_app() -> Any:
    """The evstream pipeline (topics from BENCH_ORDERS / BENCH_OUT)."""
    from pydantic import BaseModel  # noqa: PLC0415

    from evstream.schemas.domain import CATALOG, CustomerTier, CustomerTierChanged, OrderPlaced  # noqa: PLC0415
    from evstream.streams import App, Received  # noqa: PLC0415

    class Totals(BaseModel):
        total_minor: dict[str, int] = {}
        orders: int = 0

    app = App("bench-streams", catalog=CATALOG)
    orders = app.events_topic(os.environ.get("BENCH_ORDERS", "orders"))
    out = app.events_topic(os.environ.get("BENCH_OUT", "bench-out"))
    by_customer = app.events_topic(f"{app.app_id}-by-customer", internal=True)
    totals = app.table("totals", Totals)

    def add(order: OrderPlaced) -> Any:
        currency, amount = order.total.currency.value, order.total.amount_minor

        def change(t: Totals) -> Totals:
            sums = {**t.total_minor, currency: t.total_minor.get(currency, 0) + amount}
            return Totals(total_minor=sums, orders=t.orders + 1)

        return change

    @app.on(orders, OrderPlaced)
    async def route(order: OrderPlaced, received: Received) -> None:
        await app.forward(received, by_customer, key=order.customer_id)

    @app.on(by_customer, OrderPlaced, updates=[totals])
    async def aggregate(order: OrderPlaced, received: Received) -> None:
        change = totals.update(order.customer_id, add(order))
        if change is not None:
            derived = CustomerTierChanged(
                customer_id=order.customer_id,
                tier=CustomerTier.BRONZE,
                orders=change.after.orders,
                changed_at=order.placed_at,
            )
            await app.publish(derived, cause=received, topic=out)

    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        built = globals()["app"] = build_app()
        return built
    raise AttributeError(name)


@functools.cache
def admin_client(bootstrap: str) -> AdminClient:
    """One admin client for the harness (each one closed logs librdkafka's purge notice)."""
    return AdminClient({"bootstrap.servers": bootstrap})


def topics(bootstrap: str, *specs: tuple[str, int]) -> None:
    admin = admin_client(bootstrap)
    for future in admin.create_topics([NewTopic(n, p, replication_factor=-1) for n, p in specs]).values():
        future.result(30)


def delete_topics(bootstrap: str, *names: str, containing: str) -> list[str]:
    """Delete ``names`` and every topic whose name contains ``containing`` (a run's app id or
    consumer group: its internal topics); their names."""
    admin = admin_client(bootstrap)
    found = admin.list_topics(timeout=10).topics
    doomed = sorted({*(n for n in names if n in found), *(t for t in found if containing in t)})
    for future in admin.delete_topics(doomed).values() if doomed else ():
        future.result(60)
    return doomed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process so far, all its threads, exited ones too (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process per kind of thread (Linux /proc): ``main`` (the main thread: all of
    evstream's processing, Quix's loop), ``librdkafka`` (its ``rdk:*`` threads), ``other`` (other
    live threads: the worker's ops server), ``exited`` (threads gone by now: admin clients,
    recovery consumers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {"main": 0.0, "librdkafka": 0.0, "other": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kind = "main" if task.name == str(pid) else "librdkafka" if name.startswith("rdk:") else "other"
        found[kind] += (int(fields[11]) + int(fields[12])) / ticks
    found["exited"] = max(0.0, process_cpu(pid) - sum(found.values()))
    return found


PARTS: list[tuple[str, tuple[str, ...]]] = [
    (
        "Avro codec + pydantic (decode, validate, encode)",
        ("schemas/codec.py", "schemas/reading.py", "streams/topics.py", "fastavro", "pydantic"),
    ),
    (
        "envelope (headers read and written, derived ids)",
        ("schemas/events.py", "schemas/envelope", "uuid.py"),
    ),
    ("tables (rows, updates, changelog rows)", ("streams/state/",)),
    ("produce calls (derived events, forwards: librdkafka, C)", ("produce (",)),
    ("commits (flush, changelog writes, offsets, transactions)", ("streams/engine/commits.py",)),
    (
        "processor (routing, received, publish, forward)",
        ("streams/engine/processor.py", "streams/context.py", "streams/app.py"),
    ),
    ("the bench's handlers", ("bench/streams.py",)),
    ("asyncio (the handlers' coroutines)", ("asyncio/",)),
    ("prometheus metrics", ("prometheus_client",)),
    ("logging", ("logging/",)),
    ("runner loop + consume calls (librdkafka, C)", ("streams/engine/runner.py",)),
]
"""Parts of the path an event takes, and the file path (or ``function (``) fragments of their
frames; a sample goes to the part of its innermost frame that matches one (the last part, the
runner's loop and its consume calls, only when no other matches: a decode called from the loop is
the codec's)."""


THREADS = ("main thread", "other Python threads")


def attribute(raw: Path) -> tuple[dict[tuple[str, str], int], int]:
    """py-spy's raw (collapsed) stacks with thread ids: samples per (thread, part of
    :data:`PARTS`; "other" for the rest), and the total. The main thread runs the engine (consume,
    process, produce, commit); the other Python threads are the worker's ops server."""
    found: dict[tuple[str, str], int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        name = stack.partition(";")[0]  # "thread (<id>): <name>"
        thread = THREADS[0] if "MainThread" in name else THREADS[1]
        frames = stack.split(";")[1:][::-1]  # innermost first
        part = "other" if frames else "no Python frame (the exit's native code)"
        for parts in (PARTS[:-1], PARTS[-1:]):  # the runner's loop: only when nothing else
            hit = next((n for f in frames for n, marks in parts if any(m in f for m in marks)), None)
            if hit is not None:
                part = hit
                break
        found[thread, part] = found.get((thread, part), 0) + int(count)
        total += int(count)
    return found, total


class Spy:
    """py-spy recording a process, every thread, from now until it exits."""

    def __init__(self, pid: int, events: int) -> None:
        tool = os.environ.get("BENCH_PYSPY") or shutil.which("py-spy")
        if tool is None:
            raise RuntimeError("--spy needs py-spy: BENCH_PYSPY=/path/to/py-spy or py-spy on PATH")
        self.events = events
        self.raw = Path(tempfile.gettempdir()) / f"bench-streams-{pid}.spy"
        self.proc = subprocess.Popen(
            [tool, "record", "--pid", str(pid), "--rate", "100", "--threads", "--format", "raw",
             "--nonblocking", "--output", str(self.raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def finish(self) -> dict[str, Any]:
        """After the process exited: the samples per (thread, part) and the events."""
        self.proc.wait(60)
        parts, total = attribute(self.raw)
        return {"parts": parts, "samples": total, "events": self.events}


class RunFailed(RuntimeError):
    """A pipeline run that did not produce its outputs (``run``: what it had, and its log)."""

    def __init__(self, message: str, run: Run) -> None:
        super().__init__(message)
        self.run = run


@dataclass
class Run:
    """One pipeline run: times from the process start (s), CPU of the process (s)."""

    name: str
    round: int = 0
    elapsed: float = 0.0  # until every output was seen
    cpu: float = 0.0  # by then
    start_at: float | None = None  # the first record on its repartition topic: processing began
    start_cpu: float = 0.0  # by then
    first_at: float | None = None  # the first output seen
    outputs: int = 0
    ready: float | None = None  # evstream: /readyz answered 200
    threads: dict[str, float] = field(default_factory=dict)
    usage: list[tuple[float, float]] = field(default_factory=list)  # (epoch s, CPU s) every ~0.2 s
    spied: dict[str, Any] | None = None
    exit_code: int | None = None
    out: str = ""
    owner: str = ""  # the app id / consumer group: its internal topics contain it
    log: Path = Path()
    cleanup: list[Path] = field(default_factory=list)

    def rate(self, total: int) -> float:
        return total / self.elapsed

    def cpu_us(self, total: int) -> float:
        return self.cpu / total * 1e6

    def after_start(self, total: int) -> tuple[float, float] | None:
        """(events/s, CPU us/event) from the start of processing to the last output."""
        if self.start_at is None or self.elapsed <= self.start_at:
            return None
        return total / (self.elapsed - self.start_at), (self.cpu - self.start_cpu) / total * 1e6


def evstream_process(
    guarantee: str, bootstrap: str, registry: str, orders: str, out: str, profile: Path | None
) -> tuple[list[str], dict[str, str], str, int, Path]:
    """The worker's command, environment, app id, ops port and data dir."""
    app_id = f"bench-app-{out.rpartition('-')[2]}"
    port = free_port()
    data_dir = Path(tempfile.gettempdir()) / f"{app_id}-data"
    env = {
        **os.environ,
        "EVSTREAM_BOOTSTRAP_SERVERS": bootstrap,
        "EVSTREAM_REGISTRY_URL": registry,
        "EVSTREAM_STREAMS_APP_ID": app_id,
        "EVSTREAM_STREAMS_PARTITIONS": "6",
        "EVSTREAM_STREAMS_PROCESSING_GUARANTEE": guarantee,
        "EVSTREAM_STREAMS_STORE": os.environ.get("EVSTREAM_STREAMS_STORE", "memory://"),
        "EVSTREAM_STREAMS_DATA_DIR": str(data_dir),
        "BENCH_ORDERS": orders,
        "BENCH_OUT": out,
        "EVSTREAM_WORKER_HTTP_PORT": str(port),
        "EVSTREAM_WORKER_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "evstream", "worker", "bench.streams:app"]
    if profile is not None:
        command = [sys.executable, "-m", "cProfile", "-o", str(profile), *command[1:]]
    return command, env, app_id, port, data_dir


def quix_process(
    guarantee: str, bootstrap: str, registry: str, orders: str, out: str, commit_interval_s: float
) -> tuple[list[str], str, Path]:
    """The Quix pipeline's command, consumer group and state dir."""
    group = f"quix-bench-{out.rpartition('-')[2]}"
    state_dir = Path(tempfile.mkdtemp(prefix=f"{group}-"))
    command = [
        str(QUIX), str(PIPELINE), "--broker", bootstrap, "--registry", registry, "--topic", orders,
        "--out", out, "--guarantee", guarantee, "--commit-interval", str(commit_interval_s),
        "--group", group, "--state-dir", str(state_dir),
    ]  # fmt: skip
    return command, group, state_dir


def repartition_of(probe: Consumer, owner: str) -> list[TopicPartition]:
    """The partitions of the repartition topic of the pipeline ``owner`` (app id or consumer
    group: evstream's ``<app>-by-customer``, Quix's ``repartition__<group>--<input>--by-customer``),
    none until it exists."""
    for name, found in probe.list_topics(timeout=5).topics.items():
        if owner in name and name.endswith("by-customer") and found.error is None and found.partitions:
            return [TopicPartition(name, p) for p in found.partitions]
    return []


def began(probe: Consumer, partitions: list[TopicPartition]) -> bool:
    """Whether any of ``partitions`` has a record (read uncommitted: an open transaction's too)."""
    try:
        return any(probe.get_watermark_offsets(tp, timeout=5)[1] > 0 for tp in partitions)
    except KafkaException:  # a topic just made: its leaders are not known everywhere yet
        return False


def watch(
    run: Run,
    process: subprocess.Popen[bytes],
    clients: tuple[Consumer, Consumer],
    placed: int,
    port: int | None,
    spy: bool,
) -> Spy | None:
    """Count ``run``'s outputs with ``clients[0]`` (read committed) until there is one per
    OrderPlaced, noting when the first record shows on its repartition topic (``clients[1]``,
    read uncommitted) and sampling the process's CPU; its /readyz on ``port`` (evstream) starts
    py-spy with ``spy``."""
    counter, probe = clients
    started = time.perf_counter()
    spying: Spy | None = None
    seen, progress, sampled = 0, started, 0.0
    repartition: list[TopicPartition] = []
    while seen < placed:
        for message in counter.consume(1000, 0.05):
            if message.error() is None:
                seen += 1
        now = time.perf_counter()
        if run.start_at is None:
            repartition = repartition or repartition_of(probe, run.owner)
            if repartition and began(probe, repartition):
                run.start_at, run.start_cpu = time.perf_counter() - started, process_cpu(process.pid)
        if seen and run.first_at is None:
            run.first_at = now - started
        if seen > run.outputs:
            run.outputs, progress = seen, now
        if port is not None and run.ready is None and ready(port):
            run.ready = time.perf_counter() - started
            spying = Spy(process.pid, placed) if spy else None
        if now - sampled >= 0.2:
            sampled = now
            run.usage.append((time.time(), process_cpu(process.pid)))
        if process.poll() is not None:
            raise RunFailed(f"the process exited ({process.returncode}): {seen} of {placed} outputs", run)
        if now - progress > STALL_S:
            raise RunFailed(f"no new output for {STALL_S:.0f} s: {seen} of {placed} outputs", run)
    run.elapsed = time.perf_counter() - started
    run.cpu = process_cpu(process.pid)
    run.threads = thread_cpu(process.pid)
    run.usage.append((time.time(), run.cpu))
    return spying


def run_pipeline(
    name: str,
    bootstrap: str,
    registry: str,
    orders: str,
    placed: int,
    *,
    commit_interval_s: float,
    profile: Path | None = None,
    spy: bool = False,
    round_: int = 0,
) -> Run:
    """Run pipeline ``name`` (:data:`VARIANTS`) on ``orders`` until its output topic holds one
    record per OrderPlaced (read ``read_committed``), then stop it (SIGTERM); :class:`RunFailed`
    when it does not get there. The caller deletes what it made (:func:`cleanup`)."""
    engine, guarantee = VARIANTS[name]
    out = f"bench-out-{uuid.uuid4().hex[:6]}"
    topics(bootstrap, (out, OUT_PARTITIONS))
    run = Run(name, round_, out=out, log=Path(tempfile.gettempdir()) / f"bench-streams-{name}-{out[-6:]}.log")
    port: int | None = None
    env: dict[str, str] | None = None
    if engine == "evstream":
        command, env, run.owner, port, data_dir = evstream_process(
            guarantee, bootstrap, registry, orders, out, profile
        )
        run.cleanup.append(data_dir)
    else:
        command, run.owner, state_dir = quix_process(
            guarantee, bootstrap, registry, orders, out, commit_interval_s
        )
        run.cleanup.append(state_dir)
    conf = {"bootstrap.servers": bootstrap, "group.id": f"probe-{out}", "enable.auto.commit": False}
    counter = Consumer({**conf, "isolation.level": "read_committed"})
    counter.assign([TopicPartition(out, p, OFFSET_BEGINNING) for p in range(OUT_PARTITIONS)])
    probe = Consumer({**conf, "isolation.level": "read_uncommitted"})
    spying: Spy | None = None
    failed: BaseException | None = None
    with run.log.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            spying = watch(run, process, (counter, probe), placed, port, spy)
        except BaseException as exc:
            failed = exc
            raise
        finally:
            counter.close()
            probe.close()
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                run.exit_code = process.wait(120)
            except subprocess.TimeoutExpired:
                process.kill()
                run.exit_code = process.wait()
            if failed is not None and not isinstance(failed, RunFailed):
                cleanup(bootstrap, run)  # a RunFailed's caller cleans up after reading the log
    if spying is not None:
        run.spied = spying.finish()
    return run


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return str(exc)


def fill(
    bootstrap: str, registry: str, count: int, *, seed: int = 3, exact: bool = False
) -> tuple[str, int, int, dict[str, int]]:
    """A fresh 6-partition orders topic with the order events of ``count`` mixed events (exactly
    ``count`` order events with ``exact``); (topic, order events, OrderPlaced, OrderPlaced event
    id -> its position among the OrderPlaced in publishing order)."""
    from evstream.endpoints import kafka_settings, registry_settings  # noqa: PLC0415
    from evstream.producers import EventProducer  # noqa: PLC0415
    from evstream.schemas.domain import OrderPlaced  # noqa: PLC0415
    from tests.factories import mixed_events  # noqa: PLC0415

    orders = f"bench-orders-{uuid.uuid4().hex[:6]}"
    topics(bootstrap, (orders, 6))
    total, generated, position = 0, 0, dict[str, int]()
    with EventProducer(kafka=kafka_settings(bootstrap), registry=registry_settings(registry)) as producer:
        while (total if exact else generated) < count:  # in slices: 1M events do not fit in memory
            size = 100_000 if exact else min(100_000, count - generated)
            for event in mixed_events(size, seed=seed + generated):
                if event.topic != "orders" or (exact and total >= count):
                    continue
                event_id = producer.send(event, topic=orders)
                total += 1
                if isinstance(event, OrderPlaced):
                    position[str(event_id)] = len(position)
            generated += size
        if producer.flush(300):
            raise RuntimeError(f"{orders}: events not acknowledged after 300 s")
    return orders, total, len(position), position


def completions(bootstrap: str, topic: str, position: dict[str, int]) -> list[int]:
    """The timestamp (ms) of each input OrderPlaced's derived event, by input position (read from
    ``topic``, the output, ``read_committed``, matched by the causation id)."""
    probe = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"probe-{uuid.uuid4().hex[:6]}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,  # the end: exactly once, transaction markers follow the data
        }
    )
    partitions = probe.list_topics(topic, timeout=10).topics[topic].partitions
    probe.assign([TopicPartition(topic, p, 0) for p in partitions])
    left = set(partitions)
    done = [0] * len(position)
    seen = 0
    try:
        while left:
            for message in probe.consume(10_000, timeout=5):
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(str(error))
                    left.discard(message.partition() or 0)
                    continue
                cause = dict(message.headers() or [])["ce_causationid"]
                at = position[cause.decode() if isinstance(cause, bytes) else str(cause)]
                if not done[at]:
                    done[at], seen = message.timestamp()[1], seen + 1
    finally:
        probe.close()
    if seen != len(position):
        raise RuntimeError(f"{topic}: {seen} of {len(position)} orders have a derived event")
    return done


def cpu_between(usage: list[tuple[float, float]], start_ms: int, end_ms: int) -> float:
    """The worker's CPU seconds between two epoch times (ms), from its (time, CPU s) samples."""

    def at(ms: int) -> float:
        t = ms / 1000
        before = max((u for u in usage if u[0] <= t), default=usage[0])
        after = min((u for u in usage if u[0] >= t), default=usage[-1])
        if after[0] == before[0]:
            return before[1]
        return before[1] + (after[1] - before[1]) * (t - before[0]) / (after[0] - before[0])

    return at(end_ms) - at(start_ms)


def span_rate(stamps: list[int]) -> float:
    """Events per second over the span between the first and the last of ``stamps`` (ms)."""
    return len(stamps) / max((max(stamps) - min(stamps)) / 1000, 1e-3)


def cleanup(bootstrap: str, run: Run) -> list[str]:
    """Delete a run's output and internal topics and its state dir; the topics' names."""
    for path in run.cleanup:
        shutil.rmtree(path, ignore_errors=True)
    return delete_topics(bootstrap, run.out, containing=run.owner)


def flat(bootstrap: str, registry: str, count: int, commit_interval_s: float) -> None:
    from evstream.endpoints import kafka_settings  # noqa: PLC0415
    from evstream.streams.settings import StreamsSettings  # noqa: PLC0415
    from evstream.streams.views import changelog_sizes  # noqa: PLC0415

    name = "evstream-eos" if StreamsSettings().processing_guarantee == "exactly_once" else "evstream-alo"
    orders, total, placed, position = fill(bootstrap, registry, count, exact=True)
    print(f"{total:,} order events ({placed:,} OrderPlaced) on {orders}; {name}")
    try:
        found = run_pipeline(name, bootstrap, registry, orders, placed, commit_interval_s=commit_interval_s)
    except RunFailed as exc:
        delete_topics(bootstrap, orders, containing=orders)
        cleanup(bootstrap, exc.run)
        raise SystemExit(f"{exc}; the last lines of {exc.run.log}:\n{log_tail(exc.run.log)}") from exc
    except BaseException:
        delete_topics(bootstrap, orders, containing=orders)
        raise
    try:
        done, tenth = completions(bootstrap, found.out, position), placed // 10
        first, last = span_rate(done[:tenth]), span_rate(done[-tenth:])
        ordered = sorted(done)
        early, late = span_rate(ordered[:tenth]), span_rate(ordered[-tenth:])
        deciles = [span_rate(ordered[i * tenth : (i + 1) * tenth]) for i in range(10)]
        usage = found.usage
        cpu_first = cpu_between(usage, ordered[0], ordered[tenth - 1]) / tenth
        cpu_last = cpu_between(usage, ordered[-tenth], ordered[-1]) / tenth
        sizes = changelog_sizes(kafka_settings(bootstrap), f"{found.owner}-totals-changelog")
    finally:
        gone = [*cleanup(bootstrap, found), *delete_topics(bootstrap, orders, containing=orders)]
    ready_at = f"{found.ready:.1f} s" if found.ready is not None else "-"
    print(
        f"evstream: {found.elapsed:.1f} s (ready after {ready_at}), "
        f"{(max(done) - min(done)) / 1000:.1f} s from the first to the last output\n"
        f"  OrderPlaced/s of the input's first 10 %: {first:,.0f}, last 10 %: {last:,.0f}"
        f" (last/first {last / first:.2f})\n"
        f"  OrderPlaced/s of the first 10 % of completions: {early:,.0f}, last 10 %: {late:,.0f}"
        f" (last/first {late / early:.2f}); per tenth: {', '.join(f'{d:,.0f}' for d in deciles)}\n"
        f"  worker CPU per OrderPlaced (with its 3 other order events), first 10 % of completions:"
        f" {cpu_first * 1e3:.2f} ms, last 10 %: {cpu_last * 1e3:.2f} ms"
        f" (last/first {cpu_last / cpu_first:.2f})\n"
        f"  changelog records: {len(sizes)} keys, largest {max(sizes)} B\n"
        f"  deleted {len(gone)} topics: {', '.join(gone)}"
    )


def report_spy(spied: dict[str, Any]) -> None:
    """Microseconds of worker CPU per OrderPlaced (100 samples/s: a sample is 10 ms), per part
    and thread."""
    events, total, parts = spied["events"], spied["samples"], spied["parts"]
    print(f"  py-spy: {total} samples (10 ms each), ready to exit, {events:,} OrderPlaced; us/OrderPlaced:")
    print(f"    {'part':<58} " + " ".join(f"{t:>20}" for t in THREADS) + f" {'all':>8} {'share':>6}")
    names = sorted({p for _t, p in parts}, key=lambda n: -sum(c for (_t, p), c in parts.items() if p == n))
    scale = 10_000 / max(events, 1)
    for name in [*names, "total"]:
        counts = [
            sum(c for (t, p), c in parts.items() if t == thread and name in (p, "total"))
            for thread in THREADS
        ]
        cells = " ".join(f"{c * scale:>20,.0f}" for c in counts)
        print(f"    {name:<58} {cells} {sum(counts) * scale:>8,.0f} {sum(counts) / max(total, 1):>6.1%}")


def describe(run: Run, total: int, placed: int) -> str:
    steady = run.after_start(total)
    after = (
        "after start: -"
        if steady is None
        else f"after start {steady[0]:,.0f} ev/s, {steady[1]:,.0f} us/event"
    )
    times = ", ".join(
        f"{label} {at:.1f} s"
        for label, at in (("ready", run.ready), ("started", run.start_at), ("first output", run.first_at))
        if at is not None
    )
    text = (
        f"{run.name:<13} {run.elapsed:6.1f} s {run.rate(total):>8,.0f} ev/s"
        f" {run.cpu_us(total):>5,.0f} us/event ({after}; {times})"
    )
    if run.outputs != placed or run.exit_code != 0:
        text += (
            f"\n  !! {run.outputs} outputs for {placed} OrderPlaced, exit code {run.exit_code}; log {run.log}"
        )
    return text


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def summary(runs: dict[str, list[Run]], total: int, placed: int) -> None:
    """Medians per pipeline, and evstream/Quix per guarantee against :data:`TARGET`."""
    medians: dict[str, dict[str, float | None]] = {}
    print(f"\nmedians ({total:,} order events, {placed:,} OrderPlaced per run):")
    print(
        f"  {'pipeline':<13} {'rounds':>6} {'ev/s':>8} {'us/event':>9} {'ev/s after start':>17}"
        f" {'us/event after start':>21}   rounds (ev/s; after start)"
    )
    for name, done in runs.items():
        steady = [s for s in (r.after_start(total) for r in done) if s is not None]
        found = medians[name] = {
            "rate": median([r.rate(total) for r in done]),
            "cpu": median([r.cpu_us(total) for r in done]),
            "rate1": median([s[0] for s in steady]),
            "cpu1": median([s[1] for s in steady]),
        }
        cells = " ".join(
            f"{'-' if found[k] is None else f'{found[k]:,.0f}':>{w}}"
            for k, w in (("rate", 8), ("cpu", 9), ("rate1", 17), ("cpu1", 21))
        )
        each = "; ".join(
            f"{r.rate(total):,.0f}" + ("" if s is None else f", {s[0]:,.0f}")
            for r, s in ((r, r.after_start(total)) for r in done)
        )
        print(f"  {name:<13} {len(done):>6} {cells}   {each}")
    pairs = [s for s in GUARANTEES if f"evstream-{s}" in medians and f"quix-{s}" in medians]
    if pairs:
        print(f"evstream/Quix (target >= {TARGET}x; CPU: Quix's us/event over evstream's):")
    for short in pairs:
        label, ours, theirs = GUARANTEES[short], medians[f"evstream-{short}"], medians[f"quix-{short}"]

        found = {
            "events/s": ratio(ours["rate"], theirs["rate"]),
            "CPU": ratio(theirs["cpu"], ours["cpu"]),
            "events/s after start": ratio(ours["rate1"], theirs["rate1"]),
            "CPU after start": ratio(theirs["cpu1"], ours["cpu1"]),
        }
        quix = {r.round: r for r in runs[f"quix-{short}"]}
        per_round = [
            f"{r.rate(total) / quix[r.round].rate(total):.2f}"
            for r in runs[f"evstream-{short}"]
            if r.round in quix
        ]
        cells = ", ".join(
            f"{k} -" if v is None else f"{k} {v:.2f}x {'met' if v >= TARGET else 'missed'}"
            for k, v in found.items()
        )
        print(f"  {label:<13} {cells}; events/s per round: {', '.join(per_round)}")


def rounds(
    args: argparse.Namespace,
    names: list[str],
    bootstrap: str,
    registry: str,
    input_: tuple[str, int, int],
    commit_interval_s: float,
) -> tuple[dict[str, list[Run]], dict[str, Path]]:
    """``args.rounds`` rounds of the pipelines ``names`` on ``input_`` (topic, order events,
    OrderPlaced), round r starting with the r-th; the runs per pipeline and cProfile files."""
    orders, total, placed = input_
    runs: dict[str, list[Run]] = {n: [] for n in names}
    profiles: dict[str, Path] = {}
    for round_ in range(args.rounds):
        print(f"round {round_ + 1}:")
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            profile = None
            if args.profile and VARIANTS[name][0] == "evstream":
                profile = Path(tempfile.gettempdir()) / f"bench-streams-{name}-{round_}.prof"
                profiles.setdefault(name, profile)
            try:
                found = run_pipeline(
                    name,
                    bootstrap,
                    registry,
                    orders,
                    placed,
                    commit_interval_s=commit_interval_s,
                    profile=profile,
                    spy=args.spy and VARIANTS[name][0] == "evstream",
                    round_=round_,
                )
            except RunFailed as exc:
                print(f"  {name}: FAILED: {exc}; the last lines of {exc.run.log}:")
                print("    " + log_tail(exc.run.log).replace("\n", "\n    "))
                cleanup(bootstrap, exc.run)
                continue
            print("  " + describe(found, total, placed))
            if args.profile:
                shares = sorted(found.threads.items(), key=lambda i: -i[1])
                print("    CPU s per thread:", ", ".join(f"{k}={v:.2f}" for k, v in shares))
            if found.spied is not None:
                report_spy(found.spied)
            cleanup(bootstrap, found)
            runs[name].append(found)
    return runs, profiles


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=60_000, help="mixed events generated (orders kept)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument(
        "--only", default=",".join(VARIANTS), help=f"pipelines to run, comma-separated: {', '.join(VARIANTS)}"
    )
    parser.add_argument("--profile", action="store_true", help="CPU per thread, cProfile of evstream")
    parser.add_argument("--spy", action="store_true", help="py-spy the evstream workers from ready to exit")
    parser.add_argument("--flat", type=int, default=0, help="the flatness run with this many input events")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped bench still deletes its topics
    from evstream.stack import LocalStack  # noqa: PLC0415
    from evstream.streams.settings import StreamsSettings  # noqa: PLC0415

    stack = LocalStack().state()
    bootstrap, registry = stack.bootstrap_servers, stack.registry_url or ""
    commit_interval_s = StreamsSettings().commit_interval_s
    if args.flat:
        flat(bootstrap, registry, args.flat, commit_interval_s)
        return
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    if any(VARIANTS[n][0] == "quix" for n in names) and not QUIX.exists():
        print(f"Quix Streams: skipped, no {QUIX} (see the module docstring)")
        names = [n for n in names if VARIANTS[n][0] != "quix"]
    orders, total, placed, _ = fill(bootstrap, registry, args.events)
    print(
        f"{total:,} order events ({placed:,} OrderPlaced) on {orders}; commits every"
        f" {commit_interval_s:g} s; {args.rounds} round(s) of {', '.join(names)}"
    )
    try:
        runs, profiles = rounds(args, names, bootstrap, registry, (orders, total, placed), commit_interval_s)
    finally:
        delete_topics(bootstrap, orders, containing=orders)
    summary({n: r for n, r in runs.items() if r}, total, placed)
    for name, profile in profiles.items():
        if profile.exists():
            print(f"\ncProfile of {name}'s main thread, round 1 (tottime):")
            pstats.Stats(str(profile)).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
