"""A user's own faust app (streams/examples/faust_totals.py) under `evstream worker`: evstream's
codec and envelope in and out, the ops endpoints, a clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from evstream.schemas import AvroCodec, Envelope, EventReader, RegistrySchemaStore
from evstream.schemas.domain import CATALOG, CustomerTier, CustomerTierChanged, OrderPlaced
from evstream.schemas.events import Event
from tests.conftest import Endpoints, TopicFactory
from tests.consumer_helpers import publish
from tests.helpers import wait_until
from tests.kafka_helpers import end_offsets, read_records
from tests.stream_helpers import free_port, http, metric

TARGET = "evstream.streams.examples.faust_totals:app"
CUSTOMERS = 10


def orders_of(customers: list[str], round_: int) -> list[Event]:
    from evstream.schemas.domain import Currency, Money, OrderLine  # noqa: PLC0415
    from tests.factories import START  # noqa: PLC0415

    price = Money(amount_minor=1000 + round_, currency=Currency.EUR)
    return [
        OrderPlaced(
            order_id=f"order-{customer}-{round_}",
            customer_id=customer,
            lines=[OrderLine(sku="SKU-1", quantity=1, unit_price=price)],
            total=price,
            placed_at=START,
            shipping_country="DE",
        )
        for customer in customers
    ]


class Worker:
    """`python -m evstream worker` running the example, its output in a log file."""

    def __init__(self, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "evstream", "worker", TARGET],
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"the worker exited {self.proc.returncode}:\n{self.tail()}")

    def stop(self, timeout: float) -> int:
        """SIGTERM; the exit code (the worker is killed if it has not exited after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise AssertionError(f"the worker did not stop within {timeout}s:\n{self.tail()}") from None


@pytest.fixture
def app_id(endpoints: Endpoints) -> Iterator[str]:
    """A fresh faust app id; the topics faust creates for it (``<app id>-...``) are deleted after."""
    app_id = f"faust-totals-{uuid.uuid4().hex[:8]}"
    yield app_id
    admin = AdminClient({"bootstrap.servers": endpoints.bootstrap_servers})
    internal = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{app_id}-")]
    if internal:
        for future in admin.delete_topics(internal, request_timeout=30).values():
            future.result(timeout=30)


def test_a_faust_app_reads_and_writes_evstream_events_under_evstream_worker(
    endpoints: Endpoints,
    new_topic: TopicFactory,
    registry: SchemaRegistryClient,
    app_id: str,
    repo_root: Path,
    tmp_path: Path,
) -> None:
    orders, tiers = new_topic(partitions=3), new_topic(partitions=3)
    port = free_port()
    env = {
        **os.environ,
        **endpoints.environment(),
        "EXAMPLE_APP_ID": app_id,
        "EXAMPLE_ORDERS": orders,
        "EXAMPLE_TIERS": tiers,
        "EVSTREAM_WORKER_HTTP_PORT": str(port),
        "EVSTREAM_WORKER_LAG_INTERVAL_S": "1",
        "APP_DATADIR": str(tmp_path / "faust-data"),  # faust's own settings read these variables
        "BROKER_SESSION_TIMEOUT": "10",
        "BROKER_HEARTBEAT_INTERVAL": "1",
        "BROKER_COMMIT_INTERVAL": "0.5",  # the lag gauge follows the committed offsets
    }
    worker = Worker(env, repo_root, tmp_path / "worker.log")
    try:

        def ready() -> bool:
            worker.alive()
            return http(port, "/readyz")[0] == 200

        wait_until(ready, timeout=120, what="the faust worker ready", interval=0.2)
        assert http(port, "/healthz") == (200, "ok\n")

        customers = [f"customer-{i}" for i in range(CUSTOMERS)]
        # First orders first: after the repartition by customer, orders published together on
        # different partitions may reach the table in any order, so "first" is made unambiguous.
        first_ids = publish(endpoints, orders, orders_of(customers, 0))
        reader = EventReader(AvroCodec(RegistrySchemaStore(registry)), CATALOG)
        records = read_records(endpoints.bootstrap_servers, [tiers], CUSTOMERS)
        later = [e for round_ in (1, 2) for e in orders_of(customers, round_)]
        publish(endpoints, orders, later)

        def all_counted() -> bool:
            worker.alive()
            return metric(port, "evstream_stream_events_total", topic=orders) >= 3 * CUSTOMERS

        wait_until(all_counted, timeout=60, what="all 30 orders through the worker")

        def caught_up() -> bool:  # the worker's timer: lag from faust's committed offsets
            worker.alive()
            body = http(port, "/metrics")[1]
            return all(
                f'evstream_stream_lag{{partition="{p}",topic="{orders}"}} 0.0' in body for p in range(3)
            )

        wait_until(caught_up, timeout=60, what="lag 0 on every orders partition")
        body = http(port, "/metrics")[1]
        assert "evstream_stream_processing_seconds_bucket" in body
        changelog = f"{app_id}-orders-per-customer-changelog"
        assert f'evstream_stream_recovery_remaining{{partition="0",topic="{changelog}"}} 0.0' in body
    except BaseException:
        worker.stop(timeout=60)
        raise
    code = worker.stop(timeout=30)  # fails the test if the worker has not exited by then
    assert code == 0, worker.tail()

    tier_of: dict[str, tuple[CustomerTierChanged, Envelope]] = {}
    for record in records:
        envelope = Envelope.from_headers(record.headers())
        event = reader.decode(reader.model_for(record.value()), record.value())
        assert isinstance(event, CustomerTierChanged)
        assert record.key() == event.customer_id.encode()
        assert event.customer_id not in tier_of, f"a second tier event for {event.customer_id}"
        tier_of[event.customer_id] = (event, envelope)
    assert sorted(tier_of) == sorted(customers)
    for customer, first_id in zip(customers, first_ids, strict=True):
        event, envelope = tier_of[customer]
        assert (event.tier, event.orders, event.previous_tier) == (CustomerTier.BRONZE, 1, None)
        assert envelope.event_type == "CustomerTierChanged"
        assert envelope.source == app_id
        assert envelope.causation_id == str(first_id)
    # the later orders derived nothing: the worker flushed its producer before it exited 0
    assert sum(end_offsets(endpoints.bootstrap_servers, tiers)) == CUSTOMERS
    # the faust table's changelog and the repartition topic, every order in it once
    assert sum(end_offsets(endpoints.bootstrap_servers, f"{app_id}-orders-by-customer")) == 3 * CUSTOMERS
    assert sum(end_offsets(endpoints.bootstrap_servers, changelog)) > 0
