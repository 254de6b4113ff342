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

``--flat N``: the flatness run instead: N order events through the evstream pipeline, throughput
of the first and last 10 % (by output offsets) and the largest changelog record.

The evstream side is :data:`app` (``evstream worker bench.streams:app``), built on first access.
"""

from __future__ import annotations

import argparse
import os
import pstats
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


def evstream_run(
    bootstrap: str, registry: str, orders: str, expect: int, *, profile: Path | None = None, marks: int = 0
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
    progress: list[tuple[float, int]] = []
    try:
        while not ready(port):
            time.sleep(0.1)
        ready_at = time.perf_counter() - started
        done = 0
        while done < expect:
            time.sleep(0.2)
            done = end_offsets(probe, out, 3)
            progress.append((time.perf_counter() - started, done))
        elapsed = time.perf_counter() - started
        cpu = thread_cpu(worker.pid)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(120)
        probe.close()
    return {"elapsed": elapsed, "ready": ready_at, "cpu": cpu, "progress": progress, "app_id": app_id}


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


def fill(bootstrap: str, registry: str, count: int, *, seed: int = 3) -> tuple[str, int, int]:
    """A fresh 6-partition orders topic with ``count`` mixed events' order events; (topic, order
    events, OrderPlaced)."""
    from evstream.endpoints import kafka_settings, registry_settings  # noqa: PLC0415
    from evstream.producers import EventProducer  # noqa: PLC0415
    from evstream.schemas.domain import OrderPlaced  # noqa: PLC0415
    from tests.factories import mixed_events  # noqa: PLC0415

    orders = f"bench-orders-{uuid.uuid4().hex[:6]}"
    topics(bootstrap, (orders, 6))
    total = placed = 0
    with EventProducer(kafka=kafka_settings(bootstrap), registry=registry_settings(registry)) as producer:
        for start in range(0, count, 100_000):  # in slices: 1M events do not fit in memory at once
            events = [
                e for e in mixed_events(min(100_000, count - start), seed=seed + start) if e.topic == "orders"
            ]
            for event in events:
                producer.publish(event, topic=orders)
            total += len(events)
            placed += sum(isinstance(e, OrderPlaced) for e in events)
        producer.flush(300)
    return orders, total, placed


def flat(bootstrap: str, registry: str, count: int) -> None:
    from evstream.endpoints import kafka_settings  # noqa: PLC0415
    from evstream.streams.views import changelog_sizes  # noqa: PLC0415

    orders, total, placed = fill(bootstrap, registry, count)
    print(f"{total:,} order events ({placed:,} OrderPlaced) on {orders}")
    found = evstream_run(bootstrap, registry, orders, placed)
    progress = found["progress"]
    tenth = placed // 10

    def rate(lo: int, hi: int) -> float:
        t_lo: float = next(t for t, n in progress if n >= lo)
        t_hi: float = next(t for t, n in progress if n >= hi)
        return (hi - lo) / max(t_hi - t_lo, 1e-9)

    begun = next(n for _t, n in progress if n > 0)  # from the first output: start-up excluded
    first, last = rate(begun, begun + tenth), rate(placed - tenth, placed)
    sizes = changelog_sizes(kafka_settings(bootstrap), f"{found['app_id']}-totals-changelog")
    print(
        f"evstream: {found['elapsed']:.1f} s; OrderPlaced/s first 10 %: {first:,.0f}, last 10 %: {last:,.0f}"
        f" (ratio {last / first:.2f}); changelog records: {len(sizes)} keys, largest {max(sizes)} B"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=60_000, help="mixed events generated (orders kept)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--flat", type=int, default=0, help="the flatness run with this many mixed events")
    args = parser.parse_args()
    from evstream.stack import LocalStack  # noqa: PLC0415

    stack = LocalStack().state()
    bootstrap, registry = stack.bootstrap_servers, stack.registry_url or ""
    if args.flat:
        flat(bootstrap, registry, args.flat)
        return
    orders, total, placed = fill(bootstrap, registry, args.events)
    print(f"{total:,} order events ({placed:,} OrderPlaced) on {orders}")
    for round_ in range(args.rounds):
        profile = Path(tempfile.gettempdir()) / f"bench-streams-{round_}.prof" if args.profile else None
        found = evstream_run(bootstrap, registry, orders, placed, profile=profile)
        elapsed, ready_at = found["elapsed"], found["ready"]
        print(
            f"evstream: {elapsed:.1f} s ({total / elapsed:,.0f} ev/s incl. start;"
            f" ready after {ready_at:.1f} s, {total / (elapsed - ready_at):,.0f} ev/s after ready)"
        )
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
