"""The Avro codec against the real registry, interoperating with confluent-kafka's own serde."""

from __future__ import annotations

import json
import struct
import uuid

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from evstream import UnknownSchemaIdError
from evstream.schemas import AvroCodec, RecordCoordinates, RegistrySchemaStore

SCHEMA = {
    "type": "record",
    "name": "PaymentCaptured",
    "namespace": "evstream.tests",
    "fields": [
        {"name": "payment_id", "type": "string"},
        {"name": "amount_minor", "type": "long"},
        {"name": "currency", "type": {"type": "enum", "name": "Currency", "symbols": ["EUR", "USD", "GBP"]}},
        {"name": "captured_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "card_last4", "type": ["null", "string"], "default": None},
    ],
}


def records() -> list[dict[str, object]]:
    from datetime import UTC, datetime  # noqa: PLC0415

    at = datetime(2026, 11, 27, 12, 0, 0, 123000, tzinfo=UTC)
    return [
        {
            "payment_id": f"p-{i}",
            "amount_minor": 100 * i,
            "currency": ["EUR", "USD", "GBP"][i % 3],
            "captured_at": at,
            "card_last4": None if i % 2 else "4242",
        }
        for i in range(25)
    ]


def test_interop_both_ways(registry: SchemaRegistryClient) -> None:
    topic = f"codec-{uuid.uuid4().hex[:8]}"
    ctx = SerializationContext(topic, MessageField.VALUE)
    codec = AvroCodec(RegistrySchemaStore(registry))
    theirs_in = AvroDeserializer(registry)
    theirs_out = AvroSerializer(registry, json.dumps(SCHEMA), conf={"auto.register.schemas": True})

    for record in records():
        ours = codec.encode(f"{topic}-value", SCHEMA, record)
        assert theirs_in(ours, ctx) == record
        theirs = theirs_out(record, ctx)
        assert theirs is not None
        assert codec.decode(theirs, where=RecordCoordinates(topic, 0, 0)) == record
        # The same schema under the same subject: both sides frame it with the same id.
        assert struct.unpack(">bI", ours[:5]) == struct.unpack(">bI", theirs[:5])


def test_unknown_schema_id_from_the_real_registry(registry: SchemaRegistryClient) -> None:
    codec = AvroCodec(RegistrySchemaStore(registry))
    with pytest.raises(
        UnknownSchemaIdError, match=r"orders\[1\]@7: schema id 987654321 is not in the registry"
    ):
        codec.decode(struct.pack(">bI", 0, 987654321) + b"\x00", where=RecordCoordinates("orders", 1, 7))
