"""Strict events through the HTTP gateway (issue 13, items 1 and 2): `POST /v1/events/OrderPlaced`
with each item's payload answers 422 naming the field, and nothing is written."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import Endpoints
from tests.gateway_helpers import Gateway, orders_gateway, token
from tests.integration.test_strict_publish import BAD, ORDER, with_value
from tests.kafka_helpers import end_offsets

WRITER = token("strict-writer")


@pytest.fixture(scope="module")
def strict_topic(endpoints: Endpoints) -> Iterator[str]:
    admin = AdminClient({"bootstrap.servers": endpoints.bootstrap_servers})
    name = f"t-strict-gw-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, num_partitions=3)])[name].result(timeout=30)
    end_offsets(endpoints.bootstrap_servers, name)  # waits until every leader answers
    yield name
    admin.delete_topics([name], request_timeout=30)[name].result(timeout=30)


@pytest.fixture(scope="module")
def gateway(
    endpoints: Endpoints, strict_topic: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    log = tmp_path_factory.mktemp("strict-gateway") / "gateway.log"
    gw = orders_gateway(endpoints.bootstrap_servers, endpoints.registry_url, strict_topic, WRITER, log)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.mark.parametrize(("item", "field", "value"), BAD)
def test_each_item_is_a_422_naming_the_field_and_writes_nothing(
    endpoints: Endpoints, gateway: Gateway, strict_topic: str, item: str, field: str, value: Any
) -> None:
    before = end_offsets(endpoints.bootstrap_servers, strict_topic)
    response = gateway.post("OrderPlaced", WRITER, with_value(field, value))
    assert response.status_code == 422, (item, response.text)
    assert field in response.text
    assert end_offsets(endpoints.bootstrap_servers, strict_topic) == before


def test_the_valid_order_next_to_them_is_published(
    endpoints: Endpoints, gateway: Gateway, strict_topic: str
) -> None:
    before = sum(end_offsets(endpoints.bootstrap_servers, strict_topic))
    response = gateway.post("OrderPlaced", WRITER, ORDER)
    assert response.status_code == 201, response.text
    assert sum(end_offsets(endpoints.bootstrap_servers, strict_topic)) == before + 1
