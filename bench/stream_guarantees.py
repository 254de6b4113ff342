"""Processing guarantees of the demo stream app under kill -9 (streams issues).

A worker is killed with SIGKILL after ~300 orders were aggregated and a new one is started; then
the aggregates are compared with the input and the derived CustomerTierChanged records are counted
(read_committed) against their distinct ids. Run (local stack up):

    .venv/bin/python -m bench.stream_guarantees

(``exactly_once`` was measured here before it was removed: faust's transactions made no progress
on Kafka 4.1.1, see bench/RESULTS.md; at_least_once with offset-deduplicated state is offered.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from evstream import KafkaSettings, RegistrySettings
from evstream.producers import EventProducer
from evstream.schemas import Envelope
from evstream.stack import LocalStack
from evstream.streams.views import read_aggregates
from tests.factories import mixed_events
from tests.stream_helpers import expected, free_port, metric, transitions


def start(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "evstream", "worker", "evstream.streams.demo:app"],
        env={**env, "EVSTREAM_WORKER_HTTP_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return worker, port


def derived_ids(bootstrap: str, topic: str) -> Counter[str]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "isolation.level": "read_committed"}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
    ids: Counter[str] = Counter()
    idle = 0
    while idle < 6:
        batch = consumer.consume(1000, 0.5)
        idle = 0 if batch else idle + 1
        for msg in batch:
            if msg.error() is None:
                ids[str(Envelope.from_headers(msg.headers()).event_id)] += 1
    consumer.close()
    return ids


def main() -> None:
    mode = "at_least_once"
    stack = LocalStack().state()
    bootstrap, registry = stack.bootstrap_servers, stack.registry_url or ""
    run = uuid.uuid4().hex[:6]
    orders, customers, tiers = f"eo-{run}", f"ec-{run}", f"et-{run}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics(
        [NewTopic(orders, 6), NewTopic(customers, 3), NewTopic(tiers, 3)]
    ).values():
        future.result(30)
    events = [e for e in mixed_events(9000, seed=42) if e.topic == "orders"]
    with EventProducer(
        kafka=KafkaSettings(bootstrap_servers=bootstrap), registry=RegistrySettings(url=registry)
    ) as producer:
        for event in events:
            producer.publish(event, topic=orders)
        producer.flush(60)
    app = f"eapp-{run}"
    env = {
        **os.environ,
        "EVSTREAM_BOOTSTRAP_SERVERS": bootstrap,
        "EVSTREAM_REGISTRY_URL": registry,
        "EVSTREAM_STREAMS_APP_ID": app,
        "EVSTREAM_STREAMS_ORDERS_TOPIC": orders,
        "EVSTREAM_STREAMS_CUSTOMERS_TOPIC": customers,
        "EVSTREAM_STREAMS_TIERS_TOPIC": tiers,
        "EVSTREAM_WORKER_LAG_INTERVAL_S": "1",
        "EVSTREAM_STREAMS_SESSION_TIMEOUT_S": "10",
    }
    worker, port = start(env)
    deadline = time.monotonic() + 120
    by_customer = f"{app}-orders-by-customer"
    while (
        metric(port, "evstream_stream_events_total", topic=by_customer) < 300 and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    done = metric(port, "evstream_stream_events_total", topic=by_customer)
    print(f"{mode}: killing the worker after {done:.0f} orders")
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    worker, port = start(env)
    want, began, exact = expected(events), time.monotonic(), False
    while time.monotonic() - began < 240 and not exact:
        got = read_aggregates(KafkaSettings(bootstrap_servers=bootstrap), app)
        exact = (got.totals, got.orders, got.revenue) == (want.totals, want.orders, want.revenue)
        time.sleep(0 if exact else 1)
    print(f"{mode}: aggregates exact: {exact} ({time.monotonic() - began:.1f} s after the restart)")
    ids = derived_ids(bootstrap, tiers)
    print(
        f"{mode}: derived events {sum(ids.values())}, distinct ids {len(ids)},"
        f" transitions implied by the input {len(transitions(events))}"
    )
    worker.send_signal(signal.SIGTERM)
    worker.wait(60)


if __name__ == "__main__":
    main()
