"""EventProducer against the real broker and registry, read back by plain confluent-kafka clients."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from prometheus_client import REGISTRY

from evstream import DeliveryFailedError, EventValidationError, KafkaSettings, RegistrySettings
from evstream.producers import Delivery, EventProducer, ProducerSettings
from evstream.producers.delivery import DeliveryFuture
from evstream.schemas import Envelope
from tests.conftest import Endpoints, TopicFactory
from tests.factories import mixed_events
from tests.kafka_helpers import end_offsets, read_records


def producer_for(endpoints: Endpoints, **settings: Any) -> EventProducer:
    return EventProducer(
        kafka=KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers),
        registry=RegistrySettings(url=endpoints.registry_url),
        settings=ProducerSettings(**settings),
    )


def test_10k_mixed_events_read_back_by_confluent_deserializer(
    endpoints: Endpoints, new_topic: TopicFactory, registry: SchemaRegistryClient
) -> None:
    orders, customers = new_topic(partitions=6), new_topic(partitions=3)
    events = mixed_events(10_000)
    topic_of = {"orders": orders, "customers": customers}
    with producer_for(endpoints, linger_ms=5) as producer:
        futures = [
            producer.publish(e, topic=topic_of[e.topic], correlation_id=f"corr-{i}")
            for i, e in enumerate(events)
        ]
        assert producer.flush(60) == 0
        deliveries = [f.result(timeout=60) for f in futures]
    assert len({(d.topic, d.partition, d.offset) for d in deliveries}) == 10_000

    deserializer = AvroDeserializer(registry)
    records = read_records(endpoints.bootstrap_servers, [orders, customers], 10_000)
    assert len(records) == 10_000
    by_id = {d.event_id: (e, i) for i, (d, e) in enumerate(zip(deliveries, events, strict=True))}
    keys_seen: dict[tuple[str, bytes], list[int]] = defaultdict(list)
    for msg in records:
        env = Envelope.from_headers(msg.headers())
        event, index = by_id[env.event_id]
        assert env.event_type == event.event_type()
        assert env.correlation_id == f"corr-{index}"
        assert msg.key() == event.aggregate_id().encode()
        value = deserializer(msg.value(), SerializationContext(msg.topic() or "", MessageField.VALUE))
        assert type(event).model_validate(value) == event  # every field equal
        keys_seen[(msg.topic() or "", msg.key() or b"")].append(index)
    # Per-key order: each aggregate's events are read in the order they were published.
    assert all(seq == sorted(seq) for seq in keys_seen.values())
    assert len(keys_seen) > 300


def test_invalid_event_names_the_field_and_writes_nothing(
    endpoints: Endpoints, admin: AdminClient, topic: str
) -> None:
    before = end_offsets(endpoints.bootstrap_servers, topic)
    invalid_before = REGISTRY.get_sample_value(
        "evstream_events_published_total", {"topic": topic, "event_type": "OrderPlaced", "outcome": "invalid"}
    )
    with producer_for(endpoints) as producer:
        with pytest.raises(EventValidationError, match=r"OrderPlaced: field 'total\.amount_minor'"):
            producer.publish_dict(
                "OrderPlaced",
                {
                    "order_id": "o",
                    "customer_id": "c",
                    "lines": [
                        {"sku": "S", "quantity": 1, "unit_price": {"amount_minor": 5, "currency": "EUR"}}
                    ],
                    "total": {"amount_minor": -5, "currency": "EUR"},
                    "placed_at": "2026-11-27T10:00:00Z",
                    "shipping_country": "DE",
                },
                topic=topic,
            )
        assert producer.flush(10) == 0
    assert end_offsets(endpoints.bootstrap_servers, topic) == before
    invalid_after = REGISTRY.get_sample_value(
        "evstream_events_published_total", {"topic": topic, "event_type": "OrderPlaced", "outcome": "invalid"}
    )
    assert (invalid_before or 0) + 1 == invalid_after


def test_transaction_that_raises_leaves_nothing_visible(
    endpoints: Endpoints, new_topic: TopicFactory
) -> None:
    orders, customers = new_topic(partitions=3), new_topic(partitions=3)
    events = mixed_events(12)
    topic_of = {"orders": orders, "customers": customers}
    settings = {"transactional_id": f"tx-{uuid.uuid4().hex[:8]}"}
    aborted: list[DeliveryFuture] = []

    def publish_then_fail(producer: EventProducer) -> None:
        with producer.transaction():
            aborted.extend(producer.publish(event, topic=topic_of[event.topic]) for event in events[:6])
            raise RuntimeError("boom")

    with producer_for(endpoints, **settings) as producer:
        with pytest.raises(RuntimeError, match="boom"):
            publish_then_fail(producer)
        with producer.transaction():
            committed = [producer.publish(e, topic=topic_of[e.topic]) for e in events[6:]]
        ids = {f.result(timeout=30).event_id for f in committed}
    aborted_ids = set()
    for event, future in zip(events[:6], aborted, strict=True):  # never a Delivery for an aborted event
        with pytest.raises(DeliveryFailedError, match="transaction was aborted") as failed:
            future.result(timeout=0)
        assert failed.value.topic == topic_of[event.topic]  # each error names its own event
        assert failed.value.event_id is not None
        aborted_ids.add(failed.value.event_id)
    assert len(aborted_ids) == 6
    # The aborted six were written first, so a read_committed reader that reached all six committed
    # events has passed every aborted offset: had any been visible, it would be in `got`.
    got = read_records(
        endpoints.bootstrap_servers, [orders, customers], 6, **{"isolation.level": "read_committed"}
    )
    assert len(got) == 6
    assert {Envelope.from_headers(m.headers()).event_id for m in got} == ids


def test_publish_needs_start() -> None:
    producer = EventProducer()
    with pytest.raises(Exception, match="not started"):
        producer.publish(mixed_events(1)[0])


def test_async_producer_round_trip(endpoints: Endpoints, topic: str) -> None:
    import asyncio  # noqa: PLC0415

    from evstream.producers import AsyncEventProducer  # noqa: PLC0415

    events = mixed_events(30)

    async def scenario() -> list[Delivery]:
        async with AsyncEventProducer(
            kafka=KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers),
            registry=RegistrySettings(url=endpoints.registry_url),
        ) as producer:
            first = await producer.publish(events[0], topic=topic)
            rest = await producer.publish_many(events[1:], topic=topic)
            return [first, *rest]

    deliveries = asyncio.run(scenario())
    assert len(deliveries) == 30
    acked = sum(
        REGISTRY.get_sample_value(
            "evstream_events_published_total", {"topic": topic, "event_type": t, "outcome": "acked"}
        )
        or 0
        for t in {e.event_type() for e in events}
    )
    assert acked == 30
    assert (REGISTRY.get_sample_value("evstream_publish_latency_seconds_count", {"topic": topic}) or 0) == 30
    assert [d.event_type for d in deliveries] == [e.event_type() for e in events]
    got = read_records(endpoints.bootstrap_servers, [topic], 30)
    assert {(m.partition(), m.offset()) for m in got} == {(d.partition, d.offset) for d in deliveries}
