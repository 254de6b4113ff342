"""EventProducer paths that need no broker: delivery classification, timeouts, settings."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.schema_registry import SchemaRegistryClient

from evstream import DeliveryFailedError, DeliveryIndeterminateError, KafkaSettings
from producers import EventProducer, ProducerSettings
from producers.delivery import classify
from schemas import RegistrySchemaStore
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
