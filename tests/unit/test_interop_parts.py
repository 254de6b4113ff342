"""Foreign records and subject strategies, offline: event declarations by class arguments,
subject names, record-name lookup, derived envelopes, keys and the reader (mock:// registry)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from evstream import ConfigError, UnknownEventTypeError
from evstream.schemas import (
    AvroCodec,
    Catalog,
    Envelope,
    Event,
    EventReader,
    RecordCoordinates,
    RegistrySchemaStore,
    SchemaHistory,
    bump,
    check,
    derived_event_id,
    event_type_header,
    subject_name,
)
from evstream.schemas.domain import CATALOG, CustomerTierChanged, OrderPlaced, OrderShipped
from evstream.schemas.ids import DERIVED_ID_NAMESPACE


class Base(Event, topic="things", key="thing_id", avro_namespace="evstream.tests.kw"):
    """A base declared with class arguments."""

    thing_id: str


class Made(Base):
    """Inherits topic, key and namespace."""

    size: int


class Other(Base, topic="others", subject_strategy="TopicNameStrategy"):
    """Overrides the topic and the subject strategy."""

    colour: str


class Legacy(Event):
    """The ClassVar + Meta form still works."""

    topic: ClassVar[str] = "legacy"
    aggregate_field: ClassVar[str] = "legacy_id"

    legacy_id: str

    class Meta:
        namespace = "evstream.tests.legacy"


class Documented(Base):
    """This docstring is the schema's doc."""

    class Meta:
        schema_doc = True


def test_class_arguments_are_inherited_and_docs_are_off_by_default() -> None:
    made = Made(thing_id="t-1", size=3)
    assert (Made.topic, Made.aggregate_field, made.aggregate_id()) == ("things", "thing_id", "t-1")
    assert Made.record_name() == "evstream.tests.kw.Made"
    assert "doc" not in Made.avro_schema_dict()
    assert (Other.topic, Other.aggregate_field, Other.record_name()) == (
        "others",
        "thing_id",
        "evstream.tests.kw.Other",
    )
    assert Legacy.record_name() == "evstream.tests.legacy.Legacy"
    assert "doc" not in Legacy.avro_schema_dict()
    assert Documented.avro_schema_dict()["doc"] == "This docstring is the schema's doc."
    assert Documented.record_name() == "evstream.tests.kw.Documented"
    with pytest.raises(ConfigError, match="unknown subject_strategy 'Topic'"):

        class Bad(Base, subject_strategy="Topic"):
            pass


def test_subject_strategies() -> None:
    assert subject_name("TopicRecordNameStrategy", "orders", "a.B") == "orders-a.B"
    assert subject_name("TopicNameStrategy", "orders", "a.B") == "orders-value"
    assert subject_name("RecordNameStrategy", "orders", "a.B") == "a.B"
    assert Made.subject() == "things-evstream.tests.kw.Made"
    assert Made.subject("elsewhere", "RecordNameStrategy") == "evstream.tests.kw.Made"
    assert Other.subject(strategy="RecordNameStrategy") == "others-value"  # its own wins
    catalog = Catalog([Made, Other], subject_strategy="RecordNameStrategy")
    assert catalog.subject(Made) == "evstream.tests.kw.Made"
    assert catalog.subject(Other, "x") == "x-value"
    with pytest.raises(ConfigError, match="unknown subject strategy"):
        Catalog([Made], subject_strategy="Nope")  # type: ignore[arg-type]


def test_topic_name_strategy_allows_one_event_type_per_topic() -> None:
    with pytest.raises(ConfigError, match="would share subject 'orders-value'"):
        Catalog(list(CATALOG), subject_strategy="TopicNameStrategy")
    assert Catalog([OrderPlaced, CustomerTierChanged], subject_strategy="TopicNameStrategy").subject(
        OrderPlaced
    ) == ("orders-value")


def test_records_are_found_by_full_or_unambiguous_short_name() -> None:
    assert CATALOG.find_record("evstream.orders.OrderPlaced") is OrderPlaced
    assert CATALOG.find_record("OrderShipped") is OrderShipped
    assert CATALOG.find_record("com.acme.OrderShipped") is OrderShipped  # short name, one model
    assert CATALOG.find_record("com.acme.Refund") is None
    with pytest.raises(
        UnknownEventTypeError, match=r"no model in the catalog for Avro record 'com\.acme\.Refund'"
    ):
        CATALOG.for_record("com.acme.Refund")

    class Twin(Event, topic="twins", key="thing_id", avro_namespace="other.ns"):
        thing_id: str

    class Copy(Twin):  # the record name of Made's, in another namespace
        class Meta:
            schema_name = "Made"

    both = Catalog([Made, Copy])
    assert both.find_record("other.ns.Made") is Copy
    with pytest.raises(
        UnknownEventTypeError, match=r"short name is ambiguous \(evstream.tests.kw.Made, other.ns.Made\)"
    ):
        both.for_record("Made")


def test_derived_envelope_is_stable_per_position() -> None:
    first = Envelope.derived("OrderPlaced", "orders", 2, 41, 1_764_000_000_000)
    again = Envelope.derived("OrderPlaced", "orders", 2, 41, 1_764_000_000_000)
    assert first.event_id == again.event_id == derived_event_id("orders", 2, 41)
    assert first.event_id == uuid.uuid5(DERIVED_ID_NAMESPACE, "orders/2/41")
    assert uuid.uuid5(uuid.NAMESPACE_URL, "https://evstream/derived-event-id") == DERIVED_ID_NAMESPACE
    assert first.event_id.version == 5
    assert derived_event_id("orders", 2, 42) != first.event_id
    assert derived_event_id("orders", 1, 41) != first.event_id
    assert first.occurred_at == datetime.fromtimestamp(1_764_000_000, UTC)
    assert (first.source, first.correlation_id, first.causation_id, first.traceparent) == (
        "orders",
        None,
        None,
        None,
    )
    assert Envelope.derived("X", "t", 0, 0, -1).occurred_at.tzinfo is not None  # no timestamp: now
    assert event_type_header([("a", b"1"), ("ce_type", b"OrderPlaced")]) == "OrderPlaced"
    assert event_type_header([("ce_id", b"x")]) is None
    assert event_type_header(None) is None


@pytest.fixture
def codec() -> Iterator[AvroCodec]:
    with SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"}) as client:
        yield AvroCodec(RegistrySchemaStore(client))


def test_reader_resolves_the_model_by_writer_record_name_once_per_id(codec: AvroCodec) -> None:
    older = json.loads(json.dumps(OrderShipped.avro_schema_dict()))
    older["fields"] = [f for f in older["fields"] if f["name"] != "estimated_delivery"]
    older["namespace"] = "com.acme.shipping"  # a foreign producer's own namespace
    payload = codec.encode(
        "orders-value",
        older,
        {
            "order_id": "o-1",
            "carrier": "DHL",
            "tracking_number": "T1",
            "shipped_at": datetime(2026, 1, 1, tzinfo=UTC),
        },
    )
    reader = EventReader(codec, CATALOG)
    at = RecordCoordinates("orders", 0, 7)
    model = reader.model_for(payload, at)
    assert model is OrderShipped
    event = reader.decode(model, payload, at)
    assert isinstance(event, OrderShipped)
    assert (event.carrier, event.estimated_delivery) == ("DHL", None)
    assert reader.model_for(payload, at) is OrderShipped  # cached by schema id

    unknown = codec.encode(
        "refunds-value",
        {
            "type": "record",
            "name": "Refund",
            "namespace": "com.acme",
            "fields": [{"name": "id", "type": "string"}],
        },
        {"id": "r-1"},
    )
    with pytest.raises(UnknownEventTypeError, match=r"'com\.acme\.Refund'"):
        reader.model_for(unknown, at)


def test_framed_keys_decode_with_their_writer_schema(codec: AvroCodec) -> None:
    key = codec.encoder("orders-key", '"string"')("o-1")  # type: ignore[arg-type]  # a primitive key
    assert codec.decode_any(key) == "o-1"
    record_key = codec.encode(
        "orders-key",
        {"type": "record", "name": "K", "fields": [{"name": "id", "type": "string"}]},
        {"id": "o-2"},
    )
    assert codec.decode_any(record_key) == {"id": "o-2"}
    assert codec.record_name(codec.schema_id_of(record_key)) == "K"


def test_the_gate_follows_the_catalogs_strategy(tmp_path: Path) -> None:
    catalog = Catalog([OrderPlaced, CustomerTierChanged], subject_strategy="TopicNameStrategy")
    history = SchemaHistory(tmp_path)
    assert [r.subject for r in check(catalog, history)] == ["orders-value", "customer-tiers-value"]
    written = bump(catalog, history)
    assert written == [tmp_path / "orders-value" / "v1.avsc", tmp_path / "customer-tiers-value" / "v1.avsc"]
    assert all(r.ok for r in check(catalog, history))
    assert [r.ok for r in check(Catalog([OrderPlaced], subject_strategy="RecordNameStrategy"), history)] == [
        False
    ]
