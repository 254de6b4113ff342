"""The demo stream app as real worker processes: exact aggregates, recovery after kill -9,
three workers sharing the work, health endpoints through the lifecycle."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from consumers.groups import describe_group
from schemas import Envelope
from schemas.domain import OrderPlaced
from schemas.events import Event
from streams.views import Aggregates
from tests.conftest import Endpoints, TopicFactory
from tests.consumer_helpers import publish
from tests.factories import mixed_events
from tests.helpers import wait_until
from tests.kafka_helpers import read_records
from tests.stream_helpers import StreamApp, expected, http, metric, registrations, transitions

pytestmark = pytest.mark.slow


@pytest.fixture
def stream_app(
    endpoints: Endpoints, new_topic: TopicFactory, repo_root: Path, tmp_path: Path
) -> Iterator[StreamApp]:
    app = StreamApp.create(endpoints, new_topic, repo_root, tmp_path)
    try:
        yield app
    finally:
        app.stop_all()


def orders_only(count: int, seed: int) -> list[Event]:
    return [e for e in mixed_events(count, seed=seed) if e.topic == "orders"]


def wait_exact(app: StreamApp, want: Aggregates, timeout: float) -> Aggregates:
    def matches() -> Aggregates | None:
        got = app.aggregates()
        same = (got.totals, got.orders, got.tiers, got.revenue) == (
            want.totals,
            want.orders,
            want.tiers,
            want.revenue,
        )
        return got if same else None

    return wait_until(matches, timeout=timeout, what="the aggregates to equal the input's", interval=1.0)


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
    assert "evstream_stream_processing_seconds_bucket" in http(port, "/metrics")[1]


def test_a_worker_killed_mid_stream_recovers_its_tables_and_totals_stay_exact(
    endpoints: Endpoints, stream_app: StreamApp
) -> None:
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


def test_three_workers_share_the_partitions_and_survive_a_kill(
    endpoints: Endpoints, stream_app: StreamApp
) -> None:
    ports = [stream_app.start_ready() for _ in range(3)]
    admin = AdminClient({"bootstrap.servers": endpoints.bootstrap_servers})

    def three_members() -> bool:
        try:
            group = describe_group(admin, stream_app.app_id)
        except Exception:
            return False
        return len(group.members) == 3 and all(http(p, "/readyz")[0] == 200 for p in ports)

    wait_until(three_members, timeout=180, what="three ready members", interval=1.0)
    owned = [json.dumps(m["assignment"]) for m in describe_group(admin, stream_app.app_id).members]
    assert all(json.loads(o) for o in owned)  # every worker owns some partitions
    events = orders_only(12_000, seed=43)
    publish(endpoints, stream_app.orders, events)
    wait_until(
        lambda: (
            sum(metric(p, "evstream_stream_events_total", topic=stream_app.orders) for p in ports) >= 2000
        ),
        timeout=120,
        what="work under way",
    )
    worked = [metric(p, "evstream_stream_events_total", topic=stream_app.orders) for p in ports]
    stream_app.kill(ports[1])
    wait_exact(stream_app, expected(events), timeout=300)
    after = describe_group(admin, stream_app.app_id)
    assert len(after.members) == 2
    assert sum(1 for w in worked if w > 0) >= 2  # the work was shared before the kill
    assert {p.partition for p in after.partitions if p.topic == stream_app.orders and p.lag == 0} == set(
        range(6)
    )
