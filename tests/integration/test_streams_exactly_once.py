"""The demo stream app with ``processing_guarantee=exactly_once`` as real worker processes:
a worker SIGKILLed mid-transaction leaves nothing partial behind. Read ``read_committed``, the
derived events hold every tier change exactly once (no duplicate, none missing) and the tables
equal the input. (Three kills while input flows, and a zombie: tests/reliability.)"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from evstream.schemas import Envelope
from tests.conftest import Endpoints
from tests.consumer_helpers import publish
from tests.helpers import wait_until
from tests.kafka_helpers import read_records
from tests.stream_helpers import StreamApp, expected, metric, orders_only, transitions, wait_exact

pytestmark = pytest.mark.slow

EXACTLY_ONCE = {"EVSTREAM_STREAMS_PROCESSING_GUARANTEE": "exactly_once"}


def derived_tiers(endpoints: Endpoints, topic: str, count: int) -> list[Any]:
    """The CustomerTierChanged records ``read_committed``: aborted ones are never seen."""
    return read_records(endpoints.bootstrap_servers, [topic], count, **{"isolation.level": "read_committed"})


def assert_exactly_once(endpoints: Endpoints, stream_app: StreamApp, implied: set[Any]) -> None:
    records = derived_tiers(endpoints, stream_app.tiers, len(implied))
    ids = Counter(Envelope.from_headers(r.headers()).event_id for r in records)
    assert len(records) == len(implied), f"{len(records)} derived events for {len(implied)} tier changes"
    assert max(ids.values()) == 1  # no event twice
    assert len(ids) == len(implied)


def test_a_worker_killed_mid_transaction_leaves_no_duplicates_and_exact_state(
    endpoints: Endpoints, stream_app: StreamApp
) -> None:
    stream_app.extra_env = dict(EXACTLY_ONCE)
    events = orders_only(8000, seed=44)
    publish(endpoints, stream_app.orders, events)
    first = stream_app.start_ready()
    by_customer = f"{stream_app.app_id}-orders-by-customer"
    wait_until(
        lambda: metric(first, "evstream_stream_events_total", topic=by_customer) >= 500,
        timeout=120,
        what="some orders aggregated in transactions",
    )
    stream_app.kill(first)  # mid-transaction: its open transaction is aborted by the next worker's reads
    stream_app.start_ready()
    wait_exact(stream_app, expected(events), timeout=240)
    assert_exactly_once(endpoints, stream_app, transitions(events))
