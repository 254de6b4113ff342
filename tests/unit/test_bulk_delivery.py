"""Publishing without a future per event (send, publish_bulk): every outcome is still reported."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from evstream import DeliveryFailedError, DeliveryIndeterminateError, EvstreamError, KafkaSettings
from evstream.errors import PublishError
from evstream.producers import EventProducer, ProducerSettings
from evstream.schemas import RegistrySchemaStore
from tests.factories import mixed_events


def unreachable(client: SchemaRegistryClient, **options: object) -> EventProducer:
    return EventProducer(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1", kafka_extra={"log_level": 0}),
        settings=ProducerSettings(delivery_timeout_ms=120_000),
        schema_store=RegistrySchemaStore(client),
        **options,  # type: ignore[arg-type]
    )


def test_send_and_publish_bulk_report_every_failure_with_its_event_id() -> None:
    errors: list[tuple[uuid.UUID, PublishError]] = []
    with SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"}) as client:
        producer = unreachable(
            client, on_error=lambda event_id, error: errors.append((event_id, error))
        ).start()
        sent = [producer.send(event) for event in mixed_events(3, seed=1)]
        bulk = producer.publish_bulk(mixed_events(4, seed=2))
        assert (producer.sent.pending, bulk.pending) == (3, 4)  # nothing can have been reported yet
        assert producer.close(timeout=0.5) == 7
    # never written (queued, purged) or possibly written (indeterminate): each one is said
    assert [event_id for event_id, _ in errors] == sent
    assert all(isinstance(e, DeliveryFailedError | DeliveryIndeterminateError) for _, e in errors)
    tally = producer.sent
    assert (tally.acked, tally.failed + tally.indeterminate, tally.pending) == (0, 3, 0)
    assert [event_id for event_id, _ in tally.errors] == sent
    assert (bulk.acked, bulk.failed + bulk.indeterminate, bulk.pending, len(bulk.errors)) == (0, 4, 0, 4)
    assert len({event_id for event_id, _ in bulk.errors}) == 4
    assert "pending=0" in repr(bulk)


def test_without_a_callback_failures_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"}) as client:
        producer = unreachable(client).start()
        event_id = producer.send(mixed_events(1)[0])
        producer.close(timeout=0.2)
    assert producer.sent.errors[0][0] == event_id
    assert str(event_id) in caplog.text


def test_options_are_checked() -> None:
    with SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"}) as client:
        producer = unreachable(client).start()
        try:
            with pytest.raises(TypeError, match="unexpected publish option"):
                producer.send(mixed_events(1)[0], topik="x")
            with pytest.raises(TypeError, match="per event"):
                producer.publish_bulk(mixed_events(2), event_id=uuid.uuid4())
            assert producer.sent.expected == 0  # refused before anything was queued
        finally:
            producer.close(timeout=0)
    assert issubclass(EvstreamError, Exception)
