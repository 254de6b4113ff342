"""The demo stream app as real worker processes: exact aggregates, recovery after kill -9,
health endpoints through the lifecycle. (Three workers with a kill: tests/reliability.)"""

from __future__ import annotations

import pytest

from evstream.schemas import Envelope
from evstream.schemas.domain import OrderPlaced
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
    assert "evstream_stream_processing_seconds_bucket" in http(port, "/metrics")[1]


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
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
    if store == "rocksdb://":  # a clean stop keeps the table files, and the next worker reuses them
        assert "no clean stop recorded" in (stream_app.logs / f"worker-{second}.log").read_text()
        assert stream_app.stop_all() == [0]
        assert (stream_app.logs / "state" / "v1" / "tables" / ".evstream-clean-stop").exists()
        third = stream_app.start_ready()
        wait_exact(stream_app, expected(events), timeout=120)
        assert "no clean stop recorded" not in (stream_app.logs / f"worker-{third}.log").read_text()
