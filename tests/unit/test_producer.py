"""EventProducer paths that need no broker: delivery classification, timeouts, settings."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.schema_registry import SchemaRegistryClient

from evstream import (
    DeliveryFailedError,
    DeliveryIndeterminateError,
    EnvelopeError,
    EventValidationError,
    KafkaSettings,
)
from evstream.producers import EventProducer, ProducerSettings
from evstream.producers.delivery import classify
from evstream.schemas import Envelope, RegistrySchemaStore
from evstream.schemas.domain import CATALOG
from tests.factories import mixed_events


def test_timeouts_are_indeterminate_and_refusals_are_failures() -> None:
    event_id = uuid.uuid4()
    for code in (KafkaError._MSG_TIMED_OUT, KafkaError.REQUEST_TIMED_OUT, KafkaError._TIMED_OUT):
        error = classify(KafkaError(code), topic="orders", event_id=event_id)
        assert isinstance(error, DeliveryIndeterminateError)
        assert "may or may not have been written" in str(error)
    for code in (
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.NOT_ENOUGH_REPLICAS,
    ):
        error = classify(KafkaError(code), topic="orders", event_id=event_id)
        assert isinstance(error, DeliveryFailedError)
        assert "it was not written" in str(error)


def test_default_settings_never_lose_acknowledged_events() -> None:
    conf = ProducerSettings().librdkafka()
    assert conf["acks"] == "all"
    assert conf["enable.idempotence"] is True
    assert conf["compression.type"] in ("lz4", "zstd")
    assert 5 <= conf["linger.ms"] <= 20
    assert "transactional.id" not in conf
    tx = ProducerSettings(transactional_id="t1").librdkafka()
    assert tx["transaction.timeout.ms"] >= tx["delivery.timeout.ms"]


def test_a_delivery_that_times_out_is_reported_indeterminate() -> None:
    with SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"}) as client:
        producer = EventProducer(
            kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1", kafka_extra={"log_level": 0}),
            settings=ProducerSettings(delivery_timeout_ms=1000, close_timeout_s=5),
            schema_store=RegistrySchemaStore(client),
        )
        with producer:
            future = producer.publish(mixed_events(1)[0])
            with pytest.raises(DeliveryIndeterminateError, match=r"orders: event .*Local: Message timed out"):
                future.result(timeout=30)


def test_settings_refuse_combinations_librdkafka_rejects() -> None:
    with pytest.raises(ValueError, match="enable_idempotence needs acks=all"):
        ProducerSettings(acks="1")
    assert ProducerSettings(acks="1", enable_idempotence=False).librdkafka()["acks"] == "1"
    with pytest.raises(ValueError, match="must be <= 900000"):
        ProducerSettings(transactional_id="t", delivery_timeout_ms=1_000_000)


def test_naive_datetimes_are_refused() -> None:
    data = mixed_events(2)[1].model_dump()  # PaymentCaptured
    data["captured_at"] = data["captured_at"].replace(tzinfo=None)
    with pytest.raises(
        EventValidationError, match="field 'captured_at': Value error, datetimes must carry a timezone"
    ):
        CATALOG.validate("PaymentCaptured", data)


def test_close_resolves_every_future_even_without_a_broker() -> None:
    with SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"}) as client:
        producer = EventProducer(
            kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1", kafka_extra={"log_level": 0}),
            settings=ProducerSettings(delivery_timeout_ms=120_000),
            schema_store=RegistrySchemaStore(client),
        ).start()
        futures = producer.publish_many(mixed_events(5))
        assert producer.close(timeout=0.5) == 5
        for future in futures:
            assert future.done()
            # Not written, or indeterminate when it was queued before the producer learnt that no
            # broker answers (librdkafka cannot say whether a queued event was sent once): never acked.
            with pytest.raises((DeliveryFailedError, DeliveryIndeterminateError), match="Purged in queue"):
                future.result(timeout=0)


def test_an_envelope_for_another_type_is_refused() -> None:
    with SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"}) as client:
        producer = EventProducer(
            kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1", kafka_extra={"log_level": 0}),
            schema_store=RegistrySchemaStore(client),
        )
        with producer:
            event = mixed_events(1)[0]
            with pytest.raises(
                EnvelopeError, match="envelope says 'OrderShipped' but the event is 'OrderPlaced'"
            ):
                producer.publish(event, envelope=Envelope(event_type="OrderShipped"))
            producer.close(timeout=0)
