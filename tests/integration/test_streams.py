"""The demo stream app as real worker processes: exact aggregates, recovery after kill -9,
health endpoints through the lifecycle. (Three workers with a kill: tests/reliability.)"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from evstream import KafkaSettings
from evstream.schemas import Envelope
from evstream.schemas.domain import OrderPlaced
from evstream.streams.views import changelog_sizes
from tests.conftest import Endpoints
from tests.consumer_helpers import publish
from tests.helpers import wait_until
from tests.kafka_helpers import read_records
from tests.stream_helpers import (
    StreamApp,
    expected,
    http,
    metric,
    orders_only,
    registrations,
    transitions,
    wait_exact,
)

pytestmark = pytest.mark.slow


def test_twenty_thousand_events_aggregate_exactly_and_tiers_are_derived(
    endpoints: Endpoints, stream_app: StreamApp
) -> None:
    customers = registrations(100)
    publish(endpoints, stream_app.customers, customers)
    port = stream_app.start_ready()
    wait_until(
        lambda: metric(port, "evstream_stream_events_total", topic=stream_app.customers) >= 100,
        timeout=60,
        what="the customers table filled",
    )
    events = orders_only(20_000, seed=41)
    publish(endpoints, stream_app.orders, events)
    want = expected(events)
    assert sum(want.orders.values()) == sum(isinstance(e, OrderPlaced) for e in events) > 3000
    wait_exact(stream_app, want, timeout=240)

    implied = transitions(events)
    tiers = read_records(endpoints.bootstrap_servers, [stream_app.tiers], len(implied))
    derived = {}
    for record in tiers:
        envelope = Envelope.from_headers(record.headers())
        assert envelope.event_type == "CustomerTierChanged"
        derived[envelope.event_id] = record
    assert len(derived) == len(implied)  # one event per transition (a re-emit would reuse its id)

    def caught_up() -> bool:  # every orders partition committed to its end, as the worker reports
        return all(
            metric(port, "evstream_stream_lag", topic=stream_app.orders, partition=str(p)) == 0
            for p in range(6)
        ) and bool(
            http(port, "/metrics")[1].count(
                f'evstream_stream_lag{{partition="5",topic="{stream_app.orders}"}}'
            )
        )

    wait_until(caught_up, timeout=60, what="lag 0 on every orders partition")
    body = http(port, "/metrics")[1]
    assert "evstream_stream_processing_seconds_bucket" in body
    assert "# TYPE evstream_stream_recovery_remaining gauge" in body  # records left per changelog partition
    sizes = changelog_sizes(KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers),
                            f"{stream_app.app_id}-customer-totals-changelog")  # fmt: skip
    # constant size per customer: <= 4 currency sums, count, tier, one offset per origin partition (6);
    # the id-list design held ~33 ids (~1.3 KB) per customer here and grew with every order
    assert max(sizes) < 600


@pytest.mark.parametrize(
    "store", [pytest.param("memory://", marks=pytest.mark.long), "rocksdb://"]
)  # make test runs the rocksdb:// variant (files trusted only after a clean stop); make reliability both
def test_a_worker_killed_mid_stream_recovers_its_tables_and_totals_stay_exact(
    endpoints: Endpoints, stream_app: StreamApp, store: str
) -> None:
    stream_app.store = store  # rocksdb: the restarted worker reopens the killed one's files
    events = orders_only(9000, seed=42)
    publish(endpoints, stream_app.orders, events)
    first = stream_app.start_ready()
    by_customer = f"{stream_app.app_id}-orders-by-customer"
    wait_until(
        lambda: metric(first, "evstream_stream_events_total", topic=by_customer) >= 300,
        timeout=120,
        what="some orders aggregated",
    )
    stream_app.kill(first)  # mid-stream: uncommitted offsets, maybe unflushed changelog writes
    second = stream_app.start()
    seen: list[tuple[int, str]] = []

    def ready() -> bool:
        seen.append(http(second, "/readyz"))
        return seen[-1][0] == 200

    wait_until(ready, timeout=120, what="the restarted worker ready", interval=0.05)
    wait_exact(stream_app, expected(events), timeout=240)
    not_ready = [body for status, body in seen if status != 200]
    assert not_ready, "the worker was ready at once, before recovering its tables"
    assert all(status in (0, 503) for status, _ in seen[:-1])  # never ready, then ready: no flapping
    assert any(status == 503 and body.startswith("not ready: ") for status, body in seen)
    assert http(second, "/healthz") == (200, "ok\n")
    if store == "rocksdb://":  # the table files are a prefix of the changelogs, kill -9 or not:
        # recovery reads only past their checkpoint; after a clean stop there is nothing to read
        assert stream_app.stop_all() == [0]
        assert (stream_app.logs / "state" / "tables" / "customer-totals").is_dir()
        third = stream_app.start_ready()
        wait_exact(stream_app, expected(events), timeout=120)
        log = (stream_app.logs / f"worker-{third}.log").read_text()
        assert "recovered 0 changelog rows" in log, log[-2000:]


def order(customer: str, minute: int, n: int) -> OrderPlaced:
    from datetime import timedelta  # noqa: PLC0415

    from evstream.schemas.domain import Currency, Money, OrderLine  # noqa: PLC0415
    from tests.factories import START  # noqa: PLC0415

    price = Money(amount_minor=1000, currency=Currency.EUR)
    return OrderPlaced(
        order_id=f"order-{customer}-{n}",
        customer_id=customer,
        lines=[OrderLine(sku="SKU-1", quantity=1, unit_price=price)],
        total=price,
        placed_at=START + timedelta(minutes=minute),
        shipping_country="DE",
    )


def test_the_example_closes_hours_emits_final_results_and_routes_late_orders(
    endpoints: Endpoints, stream_app: StreamApp, new_topic: Any
) -> None:
    """streams/examples/busy_hours.py as a worker: 3+ orders in an hour -> one CustomerTierChanged
    when the hour closes (stream time past its end + 5 min grace), a late order forwarded."""
    orders, tiers = new_topic(partitions=1), new_topic(partitions=1)
    stream_app.target = "evstream.streams.examples.busy_hours:app"
    stream_app.extra_env = {
        "EXAMPLE_ORDERS": orders,
        "EXAMPLE_TIERS": tiers,
        "EVSTREAM_STREAMS_PARTITIONS": "1",
    }
    port = stream_app.start_ready()
    story = [order("a", 1, 1), order("a", 10, 2), order("b", 30, 3), order("a", 20, 4)]
    closing = order("a", 70, 5)  # stream time 1:10 >= 1:00 + 0:05: the first hour closes
    late = order("a", 5, 6)  # after the close: late
    ids = publish(endpoints, orders, [*story, closing, late])
    records = read_records(endpoints.bootstrap_servers, [tiers], 1)
    envelope = Envelope.from_headers(records[0].headers())
    assert envelope.causation_id == str(ids[4])  # caused by the order that closed the hour
    assert records[0].key() == b"a"
    late_records = read_records(endpoints.bootstrap_servers, [f"{stream_app.app_id}-late-orders"], 1)
    assert Envelope.from_headers(late_records[0].headers()).event_id == ids[5]  # forwarded as it was
    wait_until(lambda: metric(port, "evstream_stream_late_events_total", table="hours") == 1,
               timeout=30, what="the late order counted")  # fmt: skip
    assert metric(port, "evstream_stream_windows_closed_total", table="hours") == 2  # a and b
    consumer = Consumer({"bootstrap.servers": endpoints.bootstrap_servers, "group.id": "probe"})
    try:  # one final result only: b's hour had one order, and a's closed once
        assert consumer.get_watermark_offsets(TopicPartition(tiers, 0), timeout=10) == (0, 1)
    finally:
        consumer.close()


def test_an_order_waits_for_its_customer_and_is_emitted_without_after_max_wait(
    endpoints: Endpoints, stream_app: StreamApp, new_topic: Any, registry: Any
) -> None:
    """streams/examples/first_orders.py (``lookup(..., missing="wait")``, 20 s): an order whose
    customer is not registered yet is held, not emitted without name, and still held by the next
    worker after a restart (the queue is state); the registration releases it with name and
    email; one never registered is emitted without them after 20 s; one whose customer is known
    goes through at once. Exactly one tier event per first order."""
    from evstream.schemas import AvroCodec, EventReader, RegistrySchemaStore  # noqa: PLC0415
    from evstream.schemas.domain import CATALOG, CustomerRegistered  # noqa: PLC0415
    from tests.factories import START  # noqa: PLC0415

    orders, customers, tiers = new_topic(partitions=2), new_topic(partitions=2), new_topic(partitions=2)
    stream_app.target = "evstream.streams.examples.first_orders:app"
    stream_app.extra_env = {
        "EXAMPLE_ORDERS": orders,
        "EXAMPLE_CUSTOMERS": customers,
        "EXAMPLE_TIERS": tiers,
        "EXAMPLE_WAIT_S": "20",
        "EVSTREAM_STREAMS_PARTITIONS": "2",
    }
    reader = EventReader(AvroCodec(RegistrySchemaStore(registry)), CATALOG)

    def tier_event(record: Any) -> Any:
        return reader.decode(reader.model_for(record.value()), record.value())

    def person(customer: str, name: str) -> CustomerRegistered:
        email = f"{name.lower()}@example.com"
        return CustomerRegistered(
            customer_id=customer, email=email, name=name, country="DE", registered_at=START
        )

    def out_count() -> int:
        consumer = Consumer({"bootstrap.servers": endpoints.bootstrap_servers, "group.id": "probe"})
        try:
            return sum(
                consumer.get_watermark_offsets(TopicPartition(tiers, p), timeout=10)[1] for p in (0, 1)
            )
        finally:
            consumer.close()

    port = stream_app.start_ready()
    waiting = {"handler": "enrich"}
    held = publish(endpoints, orders, [order("ada", 1, 1)])
    wait_until(lambda: metric(port, "evstream_stream_join_waiting", **waiting) == 1,
               timeout=30, what="ada's order held")  # fmt: skip
    publish(endpoints, orders, [order("nobody", 2, 2)])  # after ada's: maybe behind it on a partition
    wait_until(lambda: metric(port, "evstream_stream_join_waiting", **waiting) == 2,
               timeout=30, what="both orders held")  # fmt: skip
    assert out_count() == 0  # held, not emitted without the customer
    assert stream_app.stop_all() == [0]  # offsets committed past both: only the state holds them
    port = stream_app.start_ready()
    wait_until(lambda: metric(port, "evstream_stream_join_waiting", **waiting) == 2,
               timeout=30, what="both orders held by the next worker")  # fmt: skip
    assert out_count() == 0
    publish(endpoints, customers, [person("ada", "Ada")])
    first = read_records(endpoints.bootstrap_servers, [tiers], 1)
    assert first[0].key() == b"ada"
    assert Envelope.from_headers(first[0].headers()).causation_id == str(held[0])
    assert (tier_event(first[0]).name, tier_event(first[0]).email) == ("Ada", "ada@example.com")
    expired = {"handler": "enrich", "then": "emit_without"}
    wait_until(lambda: metric(port, "evstream_stream_join_wait_expired_total", **expired) == 1,
               timeout=30, what="the order of a customer who never registered to expire")  # fmt: skip
    publish(endpoints, customers, [person("bea", "Bea")])
    wait_until(lambda: metric(port, "evstream_stream_events_total", topic=customers) >= 2,
               timeout=30, what="Bea registered")  # fmt: skip
    publish(endpoints, orders, [order("bea", 3, 3), order("ada", 4, 4)])  # known; ada's second order
    records = read_records(endpoints.bootstrap_servers, [tiers], 3)
    found = {(r.key() or b"").decode(): tier_event(r) for r in records}
    assert set(found) == {"ada", "nobody", "bea"}
    assert (found["nobody"].name, found["nobody"].email) == (None, None)  # emitted without, after 20 s
    assert found["bea"].name == "Bea"
    by_customer = f"{stream_app.app_id}-orders-by-customer"
    wait_until(lambda: metric(port, "evstream_stream_events_total", topic=by_customer) >= 2,
               timeout=30, what="the two orders after the restart handled")  # fmt: skip
    assert out_count() == 3  # one tier event per first order: none for ada's second, no duplicate
    assert metric(port, "evstream_stream_join_waiting", **waiting) == 0
