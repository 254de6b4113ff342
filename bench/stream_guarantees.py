"""Processing guarantees of the demo stream app under kill -9, on evstream's native engine.

The demo app (``evstream worker evstream.streams.demo:app``) runs with the guarantee asked for
(``--guarantee``, default ``EVSTREAM_STREAMS_PROCESSING_GUARANTEE`` or at_least_once) on the
order events of 12,000 mixed events, published in thirds: a worker handles the first third and
commits it; the second third is published and the worker is killed with SIGKILL as soon as it
has handled an order of it (mid-interval; exactly once: mid-transaction); the last third is
published and a new worker started. Then:

- the aggregates (the tables' changelogs, read ``read_committed``) are compared with the input;
- the derived ``CustomerTierChanged`` records are read ``read_committed`` (decoded) and compared
  with the tier changes the input implies: records, distinct event ids, duplicates (an id more
  than once; a change under several ids), missing and unexpected changes. Read again until none
  is missing (``--wait``): exactly once, the killed worker's open transaction keeps
  ``read_committed`` readers of the partitions it wrote (here: the derived events') waiting until
  the broker aborts it, so they may lag behind the aggregates by up to ~20 s.

at_least_once may re-emit the killed interval's derived events (with the same ids: a consumer's
dedupe drops them); exactly_once should show no duplicate and nothing missing. Worker logs go to
``<tmp>/bench-guarantees-<app>-<1|2>.log``; the topics are deleted afterwards. Run (local stack
up)::

    .venv/bin/python -m bench.stream_guarantees [--guarantee at_least_once|exactly_once]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient

from evstream import KafkaSettings, RegistrySettings
from evstream.producers import EventProducer
from evstream.schemas import AvroCodec, Envelope, Event, EventReader, RegistrySchemaStore
from evstream.schemas.domain import CATALOG, CustomerTierChanged, OrderPlaced
from evstream.stack import LocalStack
from evstream.streams.settings import StreamsSettings
from evstream.streams.views import Aggregates, read_aggregates
from tests.factories import mixed_events
from tests.stream_helpers import expected, free_port, metric, transitions

Change = tuple[str, str, int]  # (customer, tier, orders), as tests.stream_helpers.transitions


def start(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    with log.open("ab") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "evstream", "worker", "evstream.streams.demo:app"],
            env={**env, "EVSTREAM_WORKER_HTTP_PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return worker, port


def derived(bootstrap: str, registry: str, topic: str) -> tuple[Counter[str], Counter[Change]]:
    """The derived records of ``topic`` read ``read_committed``: the count per event id and per
    tier change."""
    reader = EventReader(
        AvroCodec(RegistrySchemaStore(SchemaRegistryClient(RegistrySettings(url=registry).client_config()))),
        CATALOG,
    )
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": uuid.uuid4().hex,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    ids: Counter[str] = Counter()
    changes: Counter[Change] = Counter()
    left, deadline = set(partitions), time.monotonic() + 120
    try:
        while left and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        left.discard(msg.partition() or 0)
                    continue
                ids[str(Envelope.from_headers(msg.headers()).event_id)] += 1
                event = reader.decode(CustomerTierChanged, msg.value())
                assert isinstance(event, CustomerTierChanged)
                changes[event.customer_id, event.tier.value, event.orders] += 1
    finally:
        consumer.close()
    if left:
        raise RuntimeError(f"{topic}: no end in 120 s for partitions {sorted(left)}")
    return ids, changes


def stop(worker: subprocess.Popen[bytes]) -> int:
    worker.send_signal(signal.SIGTERM)
    try:
        return worker.wait(60)
    except subprocess.TimeoutExpired:
        worker.kill()
        return worker.wait()


def publish(bootstrap: str, registry: str, topic: str, events: list[Event]) -> None:
    with EventProducer(
        kafka=KafkaSettings(bootstrap_servers=bootstrap), registry=RegistrySettings(url=registry)
    ) as producer:
        for event in events:
            producer.publish(event, topic=topic)
        if producer.flush(60):
            raise RuntimeError(f"{topic}: events not acknowledged after 60 s")


def handled(port: int, topic: str) -> float:
    """Orders through the worker's re-keyed stream (its /metrics; 0 when it cannot answer)."""
    return metric(port, "evstream_stream_events_total", topic=topic)


def wait_for(port: int, topic: str, count: float, worker: subprocess.Popen[bytes]) -> float:
    deadline = time.monotonic() + 120
    while (done := handled(port, topic)) < count and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.01)
    return done


def report_aggregates(kafka: KafkaSettings, app: str, want: Aggregates, wait_s: float) -> bool:
    """Poll the app's changelogs until they equal ``want`` (at most ``wait_s``); print the outcome."""
    began, exact = time.monotonic(), False
    got = read_aggregates(kafka, app)
    while not exact and time.monotonic() - began < wait_s:
        got = read_aggregates(kafka, app)
        exact = (got.totals, got.orders, got.revenue) == (want.totals, want.orders, want.revenue)
        time.sleep(0 if exact else 1)
    print(f"  aggregates exact: {exact} ({time.monotonic() - began:.1f} s after the restart)")
    if not exact:
        for name in ("totals", "orders", "revenue"):
            have, should = getattr(got, name), getattr(want, name)
            wrong = sorted(k for k in {*have, *should} if have.get(k) != should.get(k))
            print(
                f"    {name}: {len(wrong)} of {len(should)} keys differ"
                + "".join(f"\n      {k}: {have.get(k)} (input: {should.get(k)})" for k in wrong[:3])
            )
    return exact


def report_derived(bootstrap: str, registry: str, topic: str, implied: set[Change], wait_s: float) -> bool:
    """Read the derived events until none of ``implied`` is missing (at most ``wait_s``: exactly
    once, the killed worker's open transaction holds back ``read_committed`` readers of the
    partitions it wrote until the broker aborts it, ``EVSTREAM_STREAMS_TRANSACTION_TIMEOUT_S``
    after it began plus up to its abort check interval, 10 s by default); print what they are;
    whether none is missing and none unexpected."""
    began = time.monotonic()
    while True:
        ids, changes = derived(bootstrap, registry, topic)
        missing, unexpected = implied - set(changes), set(changes) - implied
        if not missing or time.monotonic() - began > wait_s:
            break
        time.sleep(1)
    records = sum(ids.values())
    repeated = records - len(ids)  # the same id more than once
    renamed = len(ids) - len(changes)  # one change under several ids
    print(
        f"  derived events (read_committed, {time.monotonic() - began:.1f} s after the aggregates):"
        f" {records} records, {len(ids)} distinct ids, {len(implied)} tier changes implied by the"
        f" input; duplicates: {repeated} (same id) + {renamed} (same change, another id);"
        f" missing {len(missing)}; unexpected {len(unexpected)}"
    )
    for label, found in (("missing", missing), ("unexpected", unexpected)):
        if found:
            print(f"    {label} (customer, tier, orders), first 5: {sorted(found)[:5]}")
    return not missing and not unexpected


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--guarantee",
        choices=("at_least_once", "exactly_once"),
        default=os.environ.get("EVSTREAM_STREAMS_PROCESSING_GUARANTEE", "at_least_once"),
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=240,
        help="s for the aggregates to be exact, then for the derived events",
    )
    args = parser.parse_args()
    mode = args.guarantee
    stack = LocalStack().state()
    bootstrap, registry = stack.bootstrap_servers, stack.registry_url or ""
    run = uuid.uuid4().hex[:6]
    orders, customers, tiers, app = f"eo-{run}", f"ec-{run}", f"et-{run}", f"eapp-{run}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics(
        [NewTopic(orders, 6), NewTopic(customers, 3), NewTopic(tiers, 3)]
    ).values():
        future.result(30)
    events = [e for e in mixed_events(12_000, seed=42) if e.topic == "orders"]
    third = len(events) // 3
    env = {
        **os.environ,
        "EVSTREAM_BOOTSTRAP_SERVERS": bootstrap,
        "EVSTREAM_REGISTRY_URL": registry,
        "EVSTREAM_STREAMS_APP_ID": app,
        "EVSTREAM_STREAMS_ORDERS_TOPIC": orders,
        "EVSTREAM_STREAMS_CUSTOMERS_TOPIC": customers,
        "EVSTREAM_STREAMS_TIERS_TOPIC": tiers,
        "EVSTREAM_STREAMS_PROCESSING_GUARANTEE": mode,
        "EVSTREAM_STREAMS_STORE": os.environ.get("EVSTREAM_STREAMS_STORE", "memory://"),
        "EVSTREAM_STREAMS_DATA_DIR": str(Path(tempfile.gettempdir()) / f"{app}-data"),
        "EVSTREAM_WORKER_LAG_INTERVAL_S": "1",
        "EVSTREAM_STREAMS_SESSION_TIMEOUT_S": "10",
        # the demo's revenue windows stay open for the whole input (as in tests/stream_helpers):
        # partitions re-read after the kill must not make their events late
        "EVSTREAM_STREAMS_WINDOW_GRACE_S": "86400",
    }
    commit_s = StreamsSettings().commit_interval_s
    logs = [Path(tempfile.gettempdir()) / f"bench-guarantees-{app}-{n}.log" for n in (1, 2)]
    print(f"{mode}: {len(events):,} order events on {orders}, in thirds; worker logs {logs[0]}, {logs[1]}")
    by_customer = f"{app}-orders-by-customer"
    try:
        publish(bootstrap, registry, orders, events[:third])
        worker, port = start(env, logs[0])
        placed = sum(isinstance(e, OrderPlaced) for e in events[:third])
        done = wait_for(port, by_customer, placed, worker)
        time.sleep(commit_s * 2)  # committed
        publish(bootstrap, registry, orders, events[third : 2 * third])
        killed_at = wait_for(port, by_customer, done + 1, worker)  # the next interval began
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        print(
            f"  first worker: {done:.0f} orders of the first third done and committed, killed"
            f" (SIGKILL) after {killed_at:.0f} with the second third coming in"
        )
        publish(bootstrap, registry, orders, events[2 * third :])
        worker, port = start(env, logs[1])
        exact = report_aggregates(
            KafkaSettings(bootstrap_servers=bootstrap), app, expected(events), args.wait
        )
        complete = report_derived(bootstrap, registry, tiers, transitions(events), args.wait)
        code = stop(worker)
        if code != 0 or not exact or not complete:
            print(f"  the restarted worker exited {code}; its log: {logs[1]}")
    finally:
        found = admin.list_topics(timeout=10).topics
        for future in admin.delete_topics(
            sorted({orders, customers, tiers, *(t for t in found if t.startswith(app))})
        ).values():
            future.result(60)


if __name__ == "__main__":
    main()
