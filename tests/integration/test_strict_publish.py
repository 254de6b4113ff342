"""Strict events through EventProducer.publish_dict and `evstream publish` (issue 13, items 1
and 2): the item's inputs are refused before anything is sent, naming the field; nothing is
written (end offsets unchanged); the valid event next to them is published."""

from __future__ import annotations

import json
from typing import Any

import pytest

from evstream.errors import EventValidationError
from evstream.producers import EventProducer
from evstream.schemas.domain import CATALOG
from evstream.settings import KafkaSettings, RegistrySettings
from tests.conftest import Endpoints
from tests.helpers import one_line_error, run_cli
from tests.kafka_helpers import end_offsets

ORDER: dict[str, Any] = {
    "order_id": "o-strict",
    "customer_id": "c-1",
    "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price": {"amount_minor": 1250, "currency": "EUR"}}],
    "total": {"amount_minor": 2500, "currency": "EUR"},
    "placed_at": "2026-11-27T10:00:00Z",
    "shipping_country": "DE",
}

BAD: list[tuple[str, str, Any]] = [
    # item 1: validates in lax terms, but no reader can decode its Avro form
    ("item1", "placed_at", "9999-12-31T23:59:59-23:59"),
    ("item1", "placed_at", "0001-01-01T00:00:00+23:59"),
    # item 2: coerced money and times
    ("item2", "total.amount_minor", True),
    ("item2", "total.amount_minor", "1999"),
    ("item2", "total.amount_minor", 1.0),
    ("item2", "placed_at", 0),
    ("item2", "placed_at", 253402300800),
]


def with_value(path: str, value: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(ORDER))
    *parents, last = path.split(".")
    target = data
    for part in parents:
        target = target[part]
    target[last] = value
    return data


def test_publish_dict_refuses_each_item_before_sending(endpoints: Endpoints, topic: str) -> None:
    before = end_offsets(endpoints.bootstrap_servers, topic)
    producer = EventProducer(
        kafka=KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers),
        registry=RegistrySettings(url=endpoints.registry_url),
        catalog=CATALOG,
    )
    with producer:
        for _, field, value in BAD:
            with pytest.raises(EventValidationError, match=rf"OrderPlaced: field '{field}'"):
                producer.publish_dict("OrderPlaced", with_value(field, value), topic=topic)
        assert producer.flush(10) == 0
        assert end_offsets(endpoints.bootstrap_servers, topic) == before
        producer.publish_dict("OrderPlaced", ORDER, topic=topic).result(timeout=30)
    assert sum(end_offsets(endpoints.bootstrap_servers, topic)) == sum(before) + 1


@pytest.mark.parametrize(("item", "field", "value"), BAD)
def test_evstream_publish_exits_2_and_writes_nothing(
    endpoints: Endpoints, topic: str, item: str, field: str, value: Any
) -> None:
    before = end_offsets(endpoints.bootstrap_servers, topic)
    env = {
        "EVSTREAM_BOOTSTRAP_SERVERS": endpoints.bootstrap_servers,
        "EVSTREAM_REGISTRY_URL": endpoints.registry_url,
    }
    proc = run_cli(
        "publish", topic, "--type", "OrderPlaced", "--data", json.dumps(with_value(field, value)), env=env
    )
    assert proc.returncode == 2, (item, proc.stdout, proc.stderr)
    assert f"field '{field}'" in one_line_error(proc)
    assert end_offsets(endpoints.bootstrap_servers, topic) == before
