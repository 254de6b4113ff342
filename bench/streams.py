"""Stream pipeline throughput on one worker: evstream streams vs Quix Streams, like for like.

Both read the same order events (Avro via the registry) from the same 6-partition topic on the
same broker, keep OrderPlaced, re-key it by customer through a 6-partition repartition topic,
keep running totals per customer and currency (state with a changelog) and write one derived
record per order to an output topic (evstream: a ``CustomerTierChanged`` event, Avro via the
registry with its envelope; Quix: JSON). Each is timed from process start until every order's
output is written (evstream: the output topic's end offsets; Quix: it exits after producing
its last update), so both include start-up and group join ("after ready" is reported for
evstream). Run (local stack up)::

    python3 -m venv bench/.venv-quix && bench/.venv-quix/bin/pip install -r bench/quix/requirements.txt
    .venv/bin/python -m bench.streams [--events 60000] [--rounds 1] [--profile]

``--profile``: the evstream worker's CPU per thread (from /proc: faust's event loop vs the
aiokafka consumer thread, whose fetch parsing is pure Python) and a cProfile of the loop thread.

``--flat N``: the flatness run instead: N events on the input topic (order events: 1 in 4 is an
OrderPlaced) through the evstream pipeline; OrderPlaced/s of the first and the last 10 % of the
input (the span between the first and the last completion among those events, from the output
records' timestamps: a completion is the derived event's send, matched to its input position by
its causation id); the same for the first and last 10 % of completions and for each tenth of them;
the worker's CPU time per OrderPlaced in the first and last 10 % of completions (from /proc: the
per-event cost, less sensitive than rates to what else the machine runs); the largest changelog
record. The topics it made are deleted afterwards.

``--spy``: sample the evstream worker with py-spy (``BENCH_PYSPY`` or ``py-spy`` on PATH; not a
dependency: ``python3 -m venv /tmp/pyspy && /tmp/pyspy/bin/pip install py-spy``) from ready to
exit, every thread, and attribute the CPU samples to the parts of an event's path
(:data:`PARTS`, by the innermost frame that matches one) and to the thread, in microseconds per
OrderPlaced (each with its 3 other order events, read and dropped).

The evstream side is :data:`app` (``evstream worker bench.streams:app``), built on first access.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

QUIX = Path(__file__).parent / ".venv-quix" / "bin" / "python"


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


def end_offsets(probe: Consumer, topic: str, partitions: int) -> int:
    return sum(
        probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)
    )


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of a process (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return found


PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("aiokafka fetch + record parsing (consumer thread)", ("aiokafka/consumer/", "aiokafka/record/")),
    ("aiokafka producer (batches, sends)", ("aiokafka/producer/",)),
    ("aiokafka connection + protocol", ("aiokafka/conn.py", "aiokafka/protocol/", "aiokafka/client.py")),
    (
        "Avro codec + pydantic (decode, encode, validate)",
        ("evstream/schemas/", "fastavro", "pydantic", "streams/codec.py"),
    ),
    ("faust tables + changelog writes", ("faust/tables/", "faust/stores/")),
    ("evstream streams API (received, state, publish)", ("evstream/streams/", "streams/app.py")),
    ("faust agents, streams, conductor, consumer", ("faust/",)),
    ("mode services", ("mode/",)),
    ("prometheus metrics", ("prometheus_client",)),
    ("logging", ("logging/",)),
    ("asyncio event loop + sockets", ("asyncio/", "selectors.py", "socket.py", "ssl.py")),
]
"""Parts of the path an event takes, and the file path fragments of their frames; a sample goes
to the part of its innermost frame that matches one (the last part, the event loop and its
sockets, only when no other matches: a socket send of the producer is the producer's)."""


THREADS = ("event loop", "consumer thread", "other threads")
OURS = ("_watchdog", "evstream-ops", "process_request")  # the worker's own threads (ops, watchdog)


def attribute(raw: Path) -> tuple[dict[tuple[str, str], int], int]:
    """py-spy's raw (collapsed) stacks with thread ids: samples per (thread, part of
    :data:`PARTS`; "other" for the rest), and the total. The event loop thread runs the agents;
    faust's consumer thread (a mode ``ServiceThread``, any thread not the worker's own) runs
    aiokafka's consumer."""
    found: dict[tuple[str, str], int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        name = stack.partition(";")[0]  # "thread (<id>): <name>"
        thread = (
            THREADS[0] if "MainThread" in name else THREADS[2] if any(n in name for n in OURS) else THREADS[1]
        )
        frames = stack.split(";")
        root = max((i for i, f in enumerate(frames) if "mode/worker.py" in f), default=0)
        frames = frames[root + 1 :][::-1]  # innermost first, below the worker (the event loop's root)
        part = "other"
        for parts in (PARTS[:-1], PARTS[-1:]):  # the event loop and sockets: only when nothing else
            hit = next((n for f in frames for n, marks in parts if any(m in f for m in marks)), None)
            if hit is not None:
                part = hit
                break
        found[thread, part] = found.get((thread, part), 0) + int(count)
        total += int(count)
    return found, total


class Spy:
    """py-spy recording a process, every thread, from now until it exits."""

    def __init__(self, pid: int) -> None:
        tool = os.environ.get("BENCH_PYSPY") or shutil.which("py-spy")
        if tool is None:
            raise RuntimeError("--spy needs py-spy: BENCH_PYSPY=/path/to/py-spy or py-spy on PATH")
        self.raw = Path(tempfile.gettempdir()) / f"bench-streams-{pid}.spy"
        self.proc = subprocess.Popen(
            [tool, "record", "--pid", str(pid), "--rate", "100", "--threads", "--format", "raw",
             "--nonblocking", "--output", str(self.raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def finish(self, events: int) -> dict[str, Any]:
        """After the process exited: the samples per (thread, part) and ``events``."""
        self.proc.wait(60)
        parts, total = attribute(self.raw)
        return {"parts": parts, "samples": total, "events": events}


def evstream_run(
    bootstrap: str,
    registry: str,
    orders: str,
    expect: int,
    *,
    profile: Path | None = None,
    spy: bool = False,
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    out, app_id, port = f"bench-out-{run}", f"bench-app-{run}", 9188
    topics(bootstrap, (out, 3))
    env = {
        **os.environ,
        "EVSTREAM_BOOTSTRAP_SERVERS": bootstrap,
        "EVSTREAM_REGISTRY_URL": registry,
        "EVSTREAM_STREAMS_APP_ID": app_id,
        "EVSTREAM_STREAMS_PARTITIONS": "6",
        "EVSTREAM_STREAMS_STORE": os.environ.get("EVSTREAM_STREAMS_STORE", "memory://"),
        "EVSTREAM_STREAMS_DATA_DIR": str(Path(tempfile.gettempdir()) / f"{app_id}-data"),
        "BENCH_ORDERS": orders,
        "BENCH_OUT": out,
        "EVSTREAM_WORKER_HTTP_PORT": str(port),
        "EVSTREAM_WORKER_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "evstream", "worker", "bench.streams:app"]
    if profile is not None:
        command = [sys.executable, "-m", "cProfile", "-o", str(profile), *command[1:]]
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{run}"})
    started = time.perf_counter()
    worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not ready(port):
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited ({worker.returncode}) before it was ready")
            time.sleep(0.1)
        ready_at = time.perf_counter() - started
        done, usage = 0, []
        spying = Spy(worker.pid) if spy else None
        while done < expect:
            time.sleep(0.2)
            done = end_offsets(probe, out, 3)
            usage.append((time.time(), sum(thread_cpu(worker.pid).values())))
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited ({worker.returncode}): {done} of {expect} outputs")
        elapsed = time.perf_counter() - started
        cpu = thread_cpu(worker.pid)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(120)
        probe.close()
    spied = spying.finish(expect) if spying is not None else None
    return {
        "elapsed": elapsed,
        "ready": ready_at,
        "cpu": cpu,
        "usage": usage,
        "spied": spied,
        "app_id": app_id,
        "out": out,
        "data_dir": env["EVSTREAM_STREAMS_DATA_DIR"],
    }


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
    ``topic``, the output, matched by the causation id)."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:6]}"})
    partitions = probe.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    probe.assign([TopicPartition(topic, p, 0) for p in partitions])
    done = [0] * len(position)
    seen = 0
    try:
        while any(ends.values()):
            for message in probe.consume(10_000, timeout=5):
                if message.error() is not None:
                    raise RuntimeError(str(message.error()))
                cause = dict(message.headers() or [])["ce_causationid"]
                at = position[cause.decode() if isinstance(cause, bytes) else str(cause)]
                if not done[at]:
                    done[at], seen = message.timestamp()[1], seen + 1
                if (message.offset() or 0) + 1 >= ends[message.partition() or 0]:
                    ends[message.partition() or 0] = 0
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


def delete_topics(bootstrap: str, *names: str, prefix: str) -> list[str]:
    """Delete ``names`` and every topic starting with ``prefix`` (the app's own); their names."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    doomed = sorted({*names, *(t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix))})
    for future in admin.delete_topics(doomed).values():
        future.result(60)
    return doomed


def flat(bootstrap: str, registry: str, count: int) -> None:
    from evstream.endpoints import kafka_settings  # noqa: PLC0415
    from evstream.streams.views import changelog_sizes  # noqa: PLC0415

    orders, total, placed, position = fill(bootstrap, registry, count, exact=True)
    print(f"{total:,} order events ({placed:,} OrderPlaced) on {orders}")
    found = evstream_run(bootstrap, registry, orders, placed)
    try:
        done, tenth = completions(bootstrap, found["out"], position), placed // 10
        first, last = span_rate(done[:tenth]), span_rate(done[-tenth:])
        ordered = sorted(done)
        early, late = span_rate(ordered[:tenth]), span_rate(ordered[-tenth:])
        deciles = [span_rate(ordered[i * tenth : (i + 1) * tenth]) for i in range(10)]
        usage = found["usage"]
        cpu_first = cpu_between(usage, ordered[0], ordered[tenth - 1]) / tenth
        cpu_last = cpu_between(usage, ordered[-tenth], ordered[-1]) / tenth
        sizes = changelog_sizes(kafka_settings(bootstrap), f"{found['app_id']}-totals-changelog")
    finally:
        gone = delete_topics(bootstrap, orders, found["out"], prefix=found["app_id"])
        shutil.rmtree(found["data_dir"], ignore_errors=True)
    print(
        f"evstream: {found['elapsed']:.1f} s (ready after {found['ready']:.1f} s), "
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
    print(f"py-spy: {total} samples (10 ms each), ready to exit, {events:,} OrderPlaced; us/OrderPlaced:")
    print(f"  {'part':<52} " + " ".join(f"{t:>15}" for t in THREADS) + f" {'all':>8} {'share':>6}")
    names = sorted({p for _t, p in parts}, key=lambda n: -sum(c for (_t, p), c in parts.items() if p == n))
    scale = 10_000 / max(events, 1)
    for name in [*names, "total"]:
        counts = [
            sum(c for (t, p), c in parts.items() if t == thread and name in (p, "total"))
            for thread in THREADS
        ]
        cells = " ".join(f"{c * scale:>15,.0f}" for c in counts)
        print(f"  {name:<52} {cells} {sum(counts) * scale:>8,.0f} {sum(counts) / total:>6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=60_000, help="mixed events generated (orders kept)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--spy", action="store_true", help="py-spy the worker from ready to exit")
    parser.add_argument("--flat", type=int, default=0, help="the flatness run with this many input events")
    args = parser.parse_args()
    from evstream.stack import LocalStack  # noqa: PLC0415

    stack = LocalStack().state()
    bootstrap, registry = stack.bootstrap_servers, stack.registry_url or ""
    if args.flat:
        flat(bootstrap, registry, args.flat)
        return
    orders, total, placed, _ = fill(bootstrap, registry, args.events)
    print(f"{total:,} order events ({placed:,} OrderPlaced) on {orders}")
    for round_ in range(args.rounds):
        profile = Path(tempfile.gettempdir()) / f"bench-streams-{round_}.prof" if args.profile else None
        found = evstream_run(bootstrap, registry, orders, placed, profile=profile, spy=args.spy)
        elapsed, ready_at = found["elapsed"], found["ready"]
        print(
            f"evstream: {elapsed:.1f} s ({total / elapsed:,.0f} ev/s incl. start;"
            f" ready after {ready_at:.1f} s, {total / (elapsed - ready_at):,.0f} ev/s after ready)"
        )
        if found["spied"] is not None:
            report_spy(found["spied"])
        if args.profile:
            cpu = found["cpu"]
            print(
                "  CPU s per thread:",
                ", ".join(f"{k}={v:.1f}" for k, v in sorted(cpu.items(), key=lambda i: -i[1]) if v >= 0.1),
            )
        if QUIX.exists():
            quix = quix_run(bootstrap, registry, orders, placed)
            print(
                f"Quix Streams: {quix:.1f} s ({total / quix:,.0f} ev/s incl. start);"
                f" evstream/Quix = {quix / elapsed:.2f}"
            )
        else:
            print(f"Quix Streams: skipped, no {QUIX} (see the module docstring)")
    if args.profile:
        time.sleep(1)
        stats = pstats.Stats(str(Path(tempfile.gettempdir()) / "bench-streams-0.prof"))
        stats.sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
