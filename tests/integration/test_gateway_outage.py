"""The gateway while its only broker is down: 503 within a deadline, never a 2xx, then recovery."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from evstream.stack import LocalStack
from tests.conftest import Endpoints
from tests.gateway_helpers import orders_gateway, token
from tests.helpers import wait_until
from tests.integration.test_gateway import orders
from tests.kafka_helpers import end_offsets

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A private one-node Kafka (the registry stays the session's): this module stops it."""
    stack = LocalStack(tmp_path_factory.mktemp("outage"), start_timeout=120, stop_timeout=10)
    stack.up(nodes=1, registry=False)
    try:
        yield stack
    finally:
        stack.down()


def test_broker_down_gives_503_within_the_deadline_never_2xx_and_recovers(
    broker: LocalStack, endpoints: Endpoints, tmp_path: Path
) -> None:
    bootstrap = broker.state().bootstrap_servers
    topic = "gw-outage"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 3)])[topic].result(timeout=30)
    end_offsets(bootstrap, topic)
    writer = token("writer")
    # the session's registry holds the schemas
    gw = orders_gateway(bootstrap, endpoints.registry_url, topic, writer, tmp_path / "gateway.log")
    bodies = orders(40, seed=61)
    accepted = 0
    try:
        assert gw.post("OrderPlaced", writer, bodies[0]).status_code == 201
        accepted += 1
        broker.stop_node(1)
        statuses = []
        for body in bodies[1:6]:
            started = time.monotonic()
            response = gw.post("OrderPlaced", writer, body)
            took = time.monotonic() - started
            statuses.append(response.status_code)
            assert response.status_code == 503, response.text
            assert took < 3.0 + 2.5, f"503 after {took:.1f}s"  # delivery timeout + margin
            assert (
                "written: no" in response.json()["detail"] or "written: unknown" in response.json()["detail"]
            )
        for atomic in (False, True):  # batches too: 503 within the deadline, nothing written
            items = [{"event_type": "OrderPlaced", "data": b} for b in bodies[30:33]]
            started = time.monotonic()
            response = httpx.post(
                gw.url + "/v1/events:batch",
                json={"events": items, "atomic": atomic},
                headers=writer.headers,
                timeout=30,
            )
            took = time.monotonic() - started
            assert response.status_code == 503, response.text
            assert took < 3.0 + 2.5, f"atomic={atomic}: 503 after {took:.1f}s"
        wait_until(
            lambda: httpx.get(gw.url + "/readyz", timeout=10).status_code == 503,
            timeout=15,
            what="readyz to report the broker down",
        )

        def producer_says_down() -> bool:  # the producer's own health, past cluster_down_fail_s (10 s)
            response = httpx.get(gw.url + "/readyz", timeout=10)
            assert response.status_code == 503, response.text
            return "no Kafka broker reachable for" in response.text

        wait_until(producer_says_down, timeout=30, what="readyz to give the producer's health")
        broker.start_node(1)

        def publishes() -> bool:  # every answer is 201 or 503; 201 once the broker is back
            nonlocal accepted
            status = gw.post("OrderPlaced", writer, bodies[6 + accepted]).status_code
            assert status in (201, 503)
            accepted += status == 201
            return status == 201

        wait_until(publishes, timeout=90, what="a 201 after the broker returned", interval=0.5)
        assert httpx.get(gw.url + "/readyz", timeout=10).status_code == 200
    finally:
        gw.stop()
    assert sum(end_offsets(bootstrap, topic)) == accepted == 2  # the refused ones were never written
