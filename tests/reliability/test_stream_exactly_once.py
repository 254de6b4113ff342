"""Stream workers under faults (make reliability): an exactly_once worker SIGKILLed three times
while input flows; a zombie (SIGSTOPped past its session timeout while another worker took its
partitions, then SIGCONTed); a partition leader SIGKILLed on the 3-node cluster (both
guarantees). Read ``read_committed``, every tier change is derived exactly once and the tables
equal the input; nothing the zombie wrote after it lost its partitions is visible."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from evstream.consumers.groups import describe_group
from evstream.stack import LocalStack
from tests.conftest import Endpoints
from tests.consumer_helpers import publish
from tests.helpers import wait_until
from tests.integration.test_streams_exactly_once import EXACTLY_ONCE, assert_exactly_once
from tests.reliability.faults import kill, leader_of, replicated_topic, start_again
from tests.stream_helpers import StreamApp, expected, http, metric, orders_only, transitions, wait_exact

pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.reliability]


def handled(port: int, topic: str) -> float:
    return metric(port, "evstream_stream_events_total", topic=topic)


def test_three_kills_while_input_flows(endpoints: Endpoints, stream_app: StreamApp) -> None:
    stream_app.extra_env = dict(EXACTLY_ONCE)
    events = orders_only(40_000, seed=45)
    size = len(events) // 4 + 1
    chunks = [events[i : i + size] for i in range(0, len(events), size)]
    assert len(chunks) == 4
    by_customer = f"{stream_app.app_id}-orders-by-customer"
    for chunk in chunks[:3]:
        publish(endpoints, stream_app.orders, chunk)
        port = stream_app.start_ready()
        wait_until(lambda: handled(port, by_customer) >= 300, timeout=120, what="orders aggregated")  # noqa: B023
        stream_app.kill(port)  # mid-transaction
    publish(endpoints, stream_app.orders, chunks[3])
    stream_app.start_ready()
    wait_exact(stream_app, expected(events), timeout=300)
    assert_exactly_once(endpoints, stream_app, transitions(events))


def test_a_zombie_writes_nothing_visible(endpoints: Endpoints, stream_app: StreamApp) -> None:
    stream_app.extra_env = dict(EXACTLY_ONCE)  # session timeout 10 s (stream_helpers)
    zombie, other = stream_app.start_ready(), stream_app.start_ready()
    admin = AdminClient({"bootstrap.servers": endpoints.bootstrap_servers})

    def members(count: int) -> bool:
        try:
            return len(describe_group(admin, stream_app.app_id).members) == count
        except Exception:
            return False

    wait_until(lambda: members(2), timeout=120, what="two members", interval=0.5)
    events = orders_only(12_000, seed=46)
    publish(endpoints, stream_app.orders, events[:6000])
    wait_until(lambda: handled(zombie, stream_app.orders) >= 200, timeout=120, what="the zombie working")
    process = stream_app.workers[zombie]
    process.send_signal(signal.SIGSTOP)  # mid-transaction, past its session timeout
    try:
        wait_until(lambda: members(1), timeout=60, what="the group to drop the paused worker", interval=0.5)
        publish(endpoints, stream_app.orders, events[6000:])
        wait_until(
            lambda: handled(other, stream_app.orders) >= 6000,
            timeout=120,
            what="the other worker taking over",
        )
    finally:
        process.send_signal(signal.SIGCONT)  # it wakes up believing it owns its partitions
    wait_exact(stream_app, expected(events), timeout=300)
    assert_exactly_once(endpoints, stream_app, transitions(events))
    assert http(zombie, "/healthz")[0] == 200  # it rejoined as a normal member
    log = (stream_app.logs / f"worker-{zombie}.log").read_text()
    assert "aborting the transaction" in log or "partitions lost" in log, log[-3000:]


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_partition_leader_killed_mid_stream_on_three_nodes(
    trio: LocalStack, endpoints: Endpoints, repo_root: Path, tmp_path: Path, guarantee: str
) -> None:
    """The demo app on the 3-node cluster (its own topics RF 3, min ISR 2): the broker leading
    orders-by-customer[0] is SIGKILLed mid-stream and started again; the aggregates end exact and
    (exactly_once) every tier change is derived once, read_committed."""
    admin, orders = replicated_topic(trio, "orders", 6)
    _admin, customers = replicated_topic(trio, "customers", 3)
    _admin, tiers = replicated_topic(trio, "tiers", 3)
    cluster = Endpoints(trio.state().bootstrap_servers, endpoints.registry_url, "trio")
    app = StreamApp(cluster, orders, customers, tiers, f"app-{uuid.uuid4().hex[:8]}", repo_root, tmp_path)
    app.extra_env = {
        "EVSTREAM_STREAMS_PROCESSING_GUARANTEE": guarantee,
        "EVSTREAM_STREAMS_REPLICATION_FACTOR": "3",
    }
    events = orders_only(12_000, seed=48)
    try:
        port = app.start_ready()
        publish(cluster, orders, events[: len(events) // 2])
        by_customer = f"{app.app_id}-orders-by-customer"
        wait_until(lambda: handled(port, by_customer) >= 300, timeout=120, what="orders aggregated")
        node = leader_of(admin, by_customer, 0)
        kill(trio.state().node(node).pid or 0)
        publish(cluster, orders, events[len(events) // 2 :])
        start_again(trio, node)
        wait_exact(app, expected(events), timeout=300)
        if guarantee == "exactly_once":
            assert_exactly_once(cluster, app, transitions(events))
    finally:
        app.stop_all()
