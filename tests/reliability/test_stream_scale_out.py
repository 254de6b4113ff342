"""Stream workers under faults: three workers share the partitions, one is killed with SIGKILL;
and a rebalance storm (workers killed and started again and again while input flows).

Invariant: no event is lost and none is counted twice. Records are processed at least once
(a survivor re-reads what the killed worker handled after its last commit), and every table row
keeps the source offset it last applied per origin partition, so a re-read record changes
nothing. The totals, order counts, tiers and windowed revenue must equal the input exactly, and
every partition ends committed to its end (none left unprocessed after the rebalances: the
failure mode faust-based workers needed a stall watchdog and restarts for).
"""

from __future__ import annotations

import json

import pytest
from confluent_kafka.admin import AdminClient

from evstream.consumers.groups import describe_group
from tests.conftest import Endpoints
from tests.consumer_helpers import publish
from tests.helpers import wait_until
from tests.integration.test_streams_exactly_once import assert_exactly_once
from tests.stream_helpers import StreamApp, expected, http, metric, orders_only, transitions, wait_exact

pytestmark = [pytest.mark.slow, pytest.mark.long]  # three workers: make reliability


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_three_workers_share_the_partitions_and_survive_a_kill(
    endpoints: Endpoints, stream_app: StreamApp, guarantee: str
) -> None:
    stream_app.extra_env = {"EVSTREAM_STREAMS_PROCESSING_GUARANTEE": guarantee}
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
    assert sum(1 for w in worked if w > 0) >= 2  # the work was shared before the kill
    if guarantee == "exactly_once":
        assert_exactly_once(endpoints, stream_app, transitions(events))

    def settled() -> bool:  # the survivors own every partition and committed all of it
        group = describe_group(admin, stream_app.app_id)
        done = {p.partition for p in group.partitions if p.topic == stream_app.orders and p.lag == 0}
        return len(group.members) == len(stream_app.workers) and done == set(range(6))

    wait_until(settled, timeout=120, what="the survivors committed every orders partition", interval=1.0)
    assert len(stream_app.workers) == 2


def test_a_rebalance_storm_leaves_no_partition_unprocessed(
    endpoints: Endpoints, stream_app: StreamApp
) -> None:
    admin = AdminClient({"bootstrap.servers": endpoints.bootstrap_servers})
    ports = [stream_app.start_ready() for _ in range(2)]
    events = orders_only(30_000, seed=47)
    chunk = len(events) // 6 + 1
    for round_ in range(6):  # each round: more input, one worker SIGKILLed, a new one started
        publish(endpoints, stream_app.orders, events[round_ * chunk : (round_ + 1) * chunk])
        stream_app.kill(ports.pop(0))
        ports.append(stream_app.start())
        if round_ % 2:  # and every other round a third worker comes and goes: more rebalances
            extra = stream_app.start()
            wait_until(lambda: http(extra, "/readyz")[0] == 200, timeout=60, what="a third worker")  # noqa: B023
            stream_app.kill(extra)
    wait_exact(stream_app, expected(events), timeout=300)

    def settled() -> bool:
        group = describe_group(admin, stream_app.app_id)
        done = {p.partition for p in group.partitions if p.topic == stream_app.orders and p.lag == 0}
        return len(group.members) == 2 and done == set(range(6))

    wait_until(settled, timeout=120, what="every orders partition committed to its end", interval=1.0)
