"""The Avro codec against confluent-kafka's mock:// registry (no network)."""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from evstream import CorruptPayloadError, EncodeError, UnknownMagicByteError, UnknownSchemaIdError
from evstream.schemas import AvroCodec, RecordCoordinates, RegistrySchemaStore

V1 = {
    "type": "record",
    "name": "OrderPlaced",
    "namespace": "evstream.tests",
    "fields": [
        {"name": "order_id", "type": "string"},
        {"name": "amount_minor", "type": "long"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}
V2 = {**V1, "fields": [*V1["fields"], {"name": "channel", "type": "string", "default": "web"}]}
RECORD = {"order_id": "o-1", "amount_minor": 4200, "note": None}
AT = RecordCoordinates("orders", 3, 42)


class CountingStore(RegistrySchemaStore):
    def __init__(self, client: SchemaRegistryClient) -> None:
        super().__init__(client)
        self.registers = 0
        self.lookups = 0

    def register(self, subject: str, schema: str) -> int:
        self.registers += 1
        return super().register(subject, schema)

    def schema(self, schema_id: int) -> str | None:
        self.lookups += 1
        return super().schema(schema_id)


@pytest.fixture
def client() -> Iterator[SchemaRegistryClient]:
    with SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"}) as registry:
        yield registry


@pytest.fixture
def store(client: SchemaRegistryClient) -> CountingStore:
    return CountingStore(client)


def test_roundtrip_and_framing(store: CountingStore) -> None:
    codec = AvroCodec(store)
    payload = codec.encode("orders-value", V1, RECORD)
    magic, schema_id = struct.unpack(">bI", payload[:5])
    assert magic == 0
    assert schema_id == codec.schema_id("orders-value", V1)
    assert AvroCodec(store).decode(payload, where=AT) == RECORD


def test_ids_and_writer_schemas_are_cached(store: CountingStore) -> None:
    codec = AvroCodec(store)
    payloads = [codec.encode("orders-value", V1, {**RECORD, "amount_minor": i}) for i in range(50)]
    assert store.registers == 1
    reader = AvroCodec(store)
    assert [reader.decode(p)["amount_minor"] for p in payloads] == list(range(50))
    assert store.lookups == 1


def test_old_events_decode_into_the_new_schema(store: CountingStore) -> None:
    old = AvroCodec(store).encode("orders-value", V1, RECORD)
    assert AvroCodec(store).decode(old, V2) == {**RECORD, "channel": "web"}


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"order_id": "o-1", "note": None}, "amount_minor"),
        ({**RECORD, "amount_minor": "lots"}, "amount_minor"),
        ({**RECORD, "extra": 1}, "extra"),
    ],
)
def test_invalid_records_fail_to_encode(
    store: CountingStore, record: dict[str, object], problem: str
) -> None:
    with pytest.raises(EncodeError, match=problem):
        AvroCodec(store).encode("orders-value", V1, record)


def test_unknown_magic_byte_names_the_record(store: CountingStore) -> None:
    with pytest.raises(UnknownMagicByteError, match=r"^orders\[3\]@42: unknown magic byte 0x7b") as info:
        AvroCodec(store).decode(b'{"order_id": "o-1"}', where=AT)
    assert info.value.where == "orders[3]@42"


def test_unknown_schema_id(store: CountingStore) -> None:
    AvroCodec(store).encode("orders-value", V1, RECORD)  # the registry is not empty
    with pytest.raises(UnknownSchemaIdError, match=r"orders\[3\]@42: schema id 9999 is not in the registry"):
        AvroCodec(store).decode(struct.pack(">bI", 0, 9999) + b"\x02a", where=AT)


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda p: p[:-3], "does not decode"),
        (lambda p: p[:5] + b"\xff" * 12, "does not decode"),
        (lambda p: p + b"\x00\x01", "2 trailing byte"),
        (lambda p: p[:3], "too short"),
        (lambda p: b"", "too short"),
    ],
)
def test_corrupt_payloads(store: CountingStore, mangle: object, reason: str) -> None:
    payload = AvroCodec(store).encode("orders-value", V1, {**RECORD, "note": "a longer note"})
    with pytest.raises(CorruptPayloadError, match=reason) as info:
        AvroCodec(store).decode(mangle(payload), where=AT)  # type: ignore[operator]
    assert str(info.value).startswith("orders[3]@42: ")


def test_encoder_is_bound_once_and_matches_encode(store: CountingStore) -> None:
    codec = AvroCodec(store)
    encode = codec.encoder("orders-value", json.dumps(V1))
    payloads = [encode({**RECORD, "amount_minor": i}) for i in range(10)]
    assert payloads[3] == codec.encode("orders-value", V1, {**RECORD, "amount_minor": 3})
    assert store.registers == 1
    with pytest.raises(EncodeError, match=r"record does not match schema evstream\.tests\.OrderPlaced"):
        encode({"order_id": 1})
