"""The real Apicurio Registry through confluent-kafka's client, serializer and deserializer."""

from __future__ import annotations

import struct
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from tests.conftest import Endpoints
from tests.helpers import wait_until

SCHEMA = """{"type": "record", "name": "Smoke", "namespace": "evstream.tests", "fields": [
  {"name": "id", "type": "string"},
  {"name": "amount_minor", "type": "long"},
  {"name": "tags", "type": {"type": "array", "items": "string"}},
  {"name": "note", "type": ["null", "string"], "default": null}
]}"""


def test_register_serialize_deserialize_roundtrip(registry: SchemaRegistryClient) -> None:
    subject_topic = f"smoke-{uuid.uuid4().hex[:8]}"
    ctx = SerializationContext(subject_topic, MessageField.VALUE)
    record = {"id": "o-1", "amount_minor": 12_345, "tags": ["a", "b"], "note": None}

    payload = AvroSerializer(registry, SCHEMA)(record, ctx)
    assert payload is not None

    # Confluent framing: magic byte 0, then the 4-byte big-endian id the registry assigned.
    magic, schema_id = struct.unpack(">bI", payload[:5])
    registered = registry.get_latest_version(f"{subject_topic}-value")
    assert magic == 0
    assert schema_id == registered.schema_id
    assert AvroDeserializer(registry)(payload, ctx) == record


def test_compatibility_endpoint_answers(registry: SchemaRegistryClient) -> None:
    subject = f"compat-{uuid.uuid4().hex[:8]}-value"
    registry.register_schema(subject, Schema(SCHEMA, "AVRO"))
    registry.set_compatibility(subject, "BACKWARD")
    assert registry.get_compatibility(subject) == "BACKWARD"
    with_default = SCHEMA.replace(
        '"default": null}', '"default": null}, {"name": "extra", "type": "int", "default": 0}'
    )
    without_default = SCHEMA.replace('"default": null}', '"default": null}, {"name": "extra", "type": "int"}')
    assert registry.test_compatibility(subject, Schema(with_default, "AVRO")) is True
    assert registry.test_compatibility(subject, Schema(without_default, "AVRO")) is False


def test_avro_through_the_broker(endpoints: Endpoints, registry: SchemaRegistryClient, topic: str) -> None:
    ctx = SerializationContext(topic, MessageField.VALUE)
    serializer = AvroSerializer(registry, SCHEMA)
    records: list[dict[str, Any]] = [
        {"id": f"o-{i}", "amount_minor": i * 100, "tags": [str(i)], "note": "n" if i % 2 else None}
        for i in range(20)
    ]
    producer = Producer({"bootstrap.servers": endpoints.bootstrap_servers, "enable.idempotence": True})
    for record in records:
        producer.produce(topic, key=str(record["id"]), value=serializer(record, ctx))
    assert producer.flush(30) == 0

    deserializer = AvroDeserializer(registry)
    consumer = Consumer(
        {
            "bootstrap.servers": endpoints.bootstrap_servers,
            "group.id": f"g-{topic}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    got = []

    def drain() -> bool:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append(deserializer(msg.value(), ctx))
        return len(got) >= len(records)

    try:
        wait_until(drain, timeout=60, what="20 Avro records")
    finally:
        consumer.close()
    assert sorted(got, key=lambda r: int(r["id"][2:])) == records
