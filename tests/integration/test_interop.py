"""Interop with Confluent's own client, both ways, against the real broker and registry.

Foreign records: written by confluent-kafka's ``SerializingProducer`` + ``AvroSerializer`` (no
CloudEvents headers unless a test adds them), under each subject name strategy, read by an
evstream consumer group, ``BoundedReplay`` and ``evstream dlq show``. evstream's records: read
by ``AvroDeserializer`` with each ``subject.name.strategy`` and by Kafka's Java console consumer.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import DeserializingConsumer, Message, SerializingProducer
from confluent_kafka.schema_registry import (
    SchemaRegistryClient,
    record_subject_name_strategy,
    topic_record_subject_name_strategy,
    topic_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import SerializationContext, StringDeserializer, StringSerializer

from evstream import KafkaSettings, RegistrySettings
from evstream.consumers import Handlers, InMemoryDedupeStore, MessageContext
from evstream.consumers.failures import header_pairs
from evstream.consumers.replay import BoundedReplay
from evstream.errors import StackError
from evstream.producers import EventProducer
from evstream.schemas import Catalog, Envelope, Event, SubjectStrategy, derived_event_id
from evstream.schemas.domain import (
    CATALOG,
    Currency,
    Money,
    OrderLine,
    OrderPlaced,
    OrderShipped,
    PaymentCaptured,
)
from evstream.stack import LocalStack, find_java
from tests.conftest import Endpoints, TopicFactory
from tests.consumer_helpers import runner
from tests.helpers import run_cli
from tests.kafka_helpers import read_records

AT = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
Strategy = Callable[[SerializationContext, str | None], str | None]
STRATEGIES: dict[str, Strategy] = {
    "TopicNameStrategy": topic_subject_name_strategy,
    "TopicRecordNameStrategy": topic_record_subject_name_strategy,
    "RecordNameStrategy": record_subject_name_strategy,
}


def _schema(model: type[Event], namespace: str | None = None, drop: tuple[str, ...] = ()) -> str:
    """``model``'s schema as a foreign service would declare it: maybe its own namespace (matched
    by short name), maybe an older version without some optional fields."""
    schema = json.loads(json.dumps(model.avro_schema_dict()))
    if namespace is not None:
        schema["namespace"] = namespace
    schema["fields"] = [f for f in schema["fields"] if f["name"] not in drop]
    return json.dumps(schema)


def _placed(i: int) -> dict[str, Any]:
    price = {"amount_minor": 1000 + i, "currency": "EUR"}
    return {
        "order_id": f"o-{i}",
        "customer_id": f"c-{i % 3}",
        "lines": [{"sku": f"SKU-{i}", "quantity": 1, "unit_price": price}],
        "total": price,
        "placed_at": AT + timedelta(seconds=i),
        "shipping_country": "DE",
        "coupon_code": None,
    }


def _paid(i: int) -> dict[str, Any]:
    return {
        "order_id": f"o-{i}",
        "payment_id": f"p-{i}",
        "amount": {"amount_minor": 1000 + i, "currency": "EUR"},
        "method": "CARD",
        "captured_at": AT + timedelta(seconds=i),
    }


def _shipped(i: int) -> dict[str, Any]:  # the older OrderShipped: no estimated_delivery
    return {"order_id": f"o-{i}", "carrier": "DHL", "tracking_number": f"T-{i}", "shipped_at": AT}


def _confluent_send(
    endpoints: Endpoints,
    registry: SchemaRegistryClient,
    topic: str,
    strategy: Strategy,
    records: list[tuple[str, dict[str, Any]]],
    *,
    avro_key: bool = False,
    headers: Callable[[int], list[tuple[str, str | bytes | None]]] | None = None,
) -> None:
    """Publish ``(schema, value)`` pairs keyed by order id with a ``SerializingProducer`` and
    ``AvroSerializer`` per schema (auto-registering, Confluent's defaults), as a Java/Go/Python
    service would; the key is a plain string, or Avro ``"string"`` with ``avro_key``."""
    producers: dict[str, SerializingProducer] = {}
    for i, (schema, value) in enumerate(records):
        producer = producers.get(schema)
        if producer is None:
            key_serializer = (
                AvroSerializer(
                    registry, '"string"', conf={"subject.name.strategy": topic_subject_name_strategy}
                )
                if avro_key
                else StringSerializer()
            )
            producer = producers[schema] = SerializingProducer(
                {
                    "bootstrap.servers": endpoints.bootstrap_servers,
                    "key.serializer": key_serializer,
                    "value.serializer": AvroSerializer(
                        registry, schema, conf={"subject.name.strategy": strategy}
                    ),
                }
            )
        producer.produce(topic, key=value["order_id"], value=value, headers=headers(i) if headers else None)
        producer.poll(0)
    for producer in producers.values():
        assert producer.flush(30) == 0


Seen = list[tuple[type[Event], Event, MessageContext]]


def _collecting(*models: type[Event]) -> tuple[Handlers, Seen]:
    seen: Seen = []
    handlers = Handlers()

    @handlers.on(*models)
    def handle(event: Event, ctx: MessageContext) -> None:
        seen.append((type(event), event, ctx))

    return handlers, seen


def _foreign_batch(strategy: str, ns: str) -> list[tuple[str, dict[str, Any]]]:
    """What a foreign service sends under ``strategy``: one type per topic under TopicNameStrategy;
    else three types, one in the foreign namespace (short-name match), one an older version."""
    if strategy == "TopicNameStrategy":
        return [(_schema(OrderPlaced), _placed(i)) for i in range(12)]
    return [
        *((_schema(OrderPlaced), _placed(i)) for i in range(6)),
        *((_schema(PaymentCaptured, namespace=ns), _paid(i)) for i in range(4)),
        *((_schema(OrderShipped, drop=("estimated_delivery",)), _shipped(i)) for i in range(2)),
    ]


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_confluent_records_are_handled_once_each_with_the_right_model_and_dedupe_works(
    endpoints: Endpoints, registry: SchemaRegistryClient, new_topic: TopicFactory, strategy: str
) -> None:
    topic = new_topic(partitions=3)
    ns = f"com.acme.t{uuid.uuid4().hex[:8]}"  # RecordNameStrategy subjects are global: keep them ours
    batch = _foreign_batch(strategy, ns)
    _confluent_send(endpoints, registry, topic, STRATEGIES[strategy], batch)
    handlers, seen = _collecting(OrderPlaced, PaymentCaptured, OrderShipped)
    dedupe = InMemoryDedupeStore()

    stats = runner(endpoints, f"g-{uuid.uuid4().hex[:8]}", handlers, topic, dedupe=dedupe).run(until_idle_s=3)

    assert (stats.handled, stats.dead_lettered, stats.skipped) == (len(batch), 0, 0)
    expected = Counter(
        {OrderPlaced: 12}
        if strategy == "TopicNameStrategy"
        else {OrderPlaced: 6, PaymentCaptured: 4, OrderShipped: 2}
    )
    assert Counter(model for model, _, _ in seen) == expected
    by_order = {(model, event.model_dump()["order_id"]): event for model, event, _ in seen}
    assert by_order[(OrderPlaced, "o-3")] == OrderPlaced.model_validate(_placed(3))
    if strategy != "TopicNameStrategy":
        assert by_order[(PaymentCaptured, "o-1")] == PaymentCaptured.model_validate(_paid(1))
        shipped = by_order[(OrderShipped, "o-0")]
        assert isinstance(shipped, OrderShipped)
        assert shipped.estimated_delivery is None
    for model, _, ctx in seen:  # the derived envelope
        env = ctx.envelope
        assert env.event_id == derived_event_id(topic, ctx.partition, ctx.offset)
        assert (env.event_type, env.source, env.correlation_id, env.causation_id) == (
            model.__name__,
            topic,
            None,
            None,
        )
        assert env.occurred_at == ctx.timestamp
        assert ctx.key is not None
        assert ctx.key.startswith(b"o-")
        assert ctx.decoded_key is None
    assert len({ctx.envelope.event_id for _, _, ctx in seen}) == len(batch)
    if strategy == "TopicNameStrategy":
        assert registry.get_latest_version(f"{topic}-value").schema.schema_str is not None

    # Redelivered (another run reads the same records again): every one is a duplicate by its id.
    again = runner(endpoints, f"g-{uuid.uuid4().hex[:8]}", handlers, topic, dedupe=dedupe).run(until_idle_s=3)
    assert (again.handled, again.duplicates) == (0, len(batch))
    assert len(seen) == len(batch)


def test_confluent_records_with_envelope_headers_and_avro_keys(
    endpoints: Endpoints, registry: SchemaRegistryClient, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=1)
    envelopes = [Envelope(event_type="OrderPlaced", source="java-checkout") for _ in range(5)]
    batch = [(_schema(OrderPlaced), _placed(i)) for i in range(5)]

    def headers(i: int) -> list[tuple[str, str | bytes | None]]:
        return envelopes[i].to_headers()

    _confluent_send(
        endpoints, registry, topic, topic_subject_name_strategy, batch, avro_key=True, headers=headers
    )
    handlers, seen = _collecting(OrderPlaced)

    stats = runner(endpoints, f"g-{uuid.uuid4().hex[:8]}", handlers, topic).run(until_idle_s=3)

    assert stats.handled == 5
    assert [ctx.envelope.event_id for _, _, ctx in seen] == [e.event_id for e in envelopes]  # headers win
    assert {ctx.envelope.source for _, _, ctx in seen} == {"java-checkout"}
    for _, event, ctx in seen:
        assert ctx.decoded_key == event.model_dump()["order_id"]  # Avro "string" key, decoded
        assert ctx.key is not None
        assert ctx.key[0] == 0
        assert ctx.key.endswith(ctx.decoded_key.encode())


def test_a_foreign_record_without_a_model_is_dead_lettered_naming_its_record(
    endpoints: Endpoints, registry: SchemaRegistryClient, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=1)
    dlq = f"{topic}.dlq"
    ns = f"com.acme.t{uuid.uuid4().hex[:8]}"
    refund = json.dumps(
        {
            "type": "record",
            "name": "Refund",
            "namespace": ns,
            "fields": [{"name": "order_id", "type": "string"}, {"name": "amount_minor", "type": "long"}],
        }
    )
    batch = [(_schema(OrderPlaced), _placed(0)), (refund, {"order_id": "o-9", "amount_minor": 250})]
    _confluent_send(endpoints, registry, topic, topic_record_subject_name_strategy, batch)
    handlers, seen = _collecting(OrderPlaced)

    stats = runner(endpoints, f"g-{uuid.uuid4().hex[:8]}", handlers, topic, catalog=CATALOG).run(
        until_idle_s=3
    )

    assert (stats.handled, stats.dead_lettered) == (1, 1)
    assert [model for model, _, _ in seen] == [OrderPlaced]
    [dead] = read_records(endpoints.bootstrap_servers, [dlq], 1)
    found = dict(header_pairs(dead))
    assert found["evstream.dlq.reason"] == b"unknown_schema"
    assert found["evstream.dlq.error-type"] == b"UnknownEventTypeError"
    assert (
        f"no model in the catalog for Avro record '{ns}.Refund'".encode()
        in found["evstream.dlq.error-message"]
    )

    shown = run_cli(
        "dlq",
        "show",
        "--dlq",
        dlq,
        "--offset",
        "0",
        "-b",
        endpoints.bootstrap_servers,
        "--registry-url",
        endpoints.registry_url,
    )
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert view["record"] == f"{ns}.Refund"
    assert view["value_decoded"] == {"order_id": "o-9", "amount_minor": 250}
    assert view["reason"] == "unknown_schema"
    assert view["event_id"] == str(derived_event_id(topic, 0, 1))  # the id the consumer derived
    assert view["origin"] == f"{topic}[0]@1"


def test_bounded_replay_reads_foreign_records_like_the_group(
    endpoints: Endpoints, registry: SchemaRegistryClient, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=3)
    batch = _foreign_batch("TopicRecordNameStrategy", f"com.acme.t{uuid.uuid4().hex[:8]}")
    _confluent_send(endpoints, registry, topic, topic_record_subject_name_strategy, batch)
    handlers, seen = _collecting(OrderPlaced, PaymentCaptured)  # OrderShipped: in the catalog, no handler

    result = BoundedReplay(
        topic,
        "earliest",
        handlers=handlers,
        catalog=CATALOG,
        kafka=KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers),
        registry=RegistrySettings(url=endpoints.registry_url),
    ).run()

    assert (result.processed, result.delivered, result.skipped, result.undecodable) == (12, 10, 2, 0)
    assert Counter(model for model, _, _ in seen) == {OrderPlaced: 6, PaymentCaptured: 4}
    for _, _, ctx in seen:
        assert ctx.envelope.event_id == derived_event_id(topic, ctx.partition, ctx.offset)


def _evstream_events(count: int) -> list[Event]:
    price = Money(amount_minor=1250, currency=Currency.EUR)
    return [
        OrderPlaced(
            order_id=f"o-{i}",
            customer_id="c-1",
            lines=[OrderLine(sku="SKU-1", quantity=1, unit_price=price)],
            total=price,
            placed_at=AT + timedelta(seconds=i),
            shipping_country="DE",
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_evstream_records_are_read_by_confluents_avro_deserializer(
    endpoints: Endpoints, registry: SchemaRegistryClient, new_topic: TopicFactory, strategy: SubjectStrategy
) -> None:
    topic = new_topic(partitions=1)
    events = _evstream_events(5)
    catalog = Catalog([OrderPlaced], subject_strategy=strategy)
    with EventProducer(
        kafka=KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers),
        registry=RegistrySettings(url=endpoints.registry_url),
        catalog=catalog,
    ) as producer:
        for event in events:
            producer.publish(event, topic=topic).result(timeout=30)
    subject = catalog.subject(OrderPlaced, topic)
    assert (
        subject
        == {
            "TopicNameStrategy": f"{topic}-value",
            "TopicRecordNameStrategy": f"{topic}-evstream.orders.OrderPlaced",
            "RecordNameStrategy": "evstream.orders.OrderPlaced",
        }[strategy]
    )
    assert subject in registry.get_subjects()

    consumer = DeserializingConsumer(
        {
            "bootstrap.servers": endpoints.bootstrap_servers,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "key.deserializer": StringDeserializer(),
            "value.deserializer": AvroDeserializer(
                registry, conf={"subject.name.strategy": STRATEGIES[strategy], "use.latest.version": True}
            ),
        }
    )
    got: list[Message] = []
    try:
        consumer.subscribe([topic])
        deadline = datetime.now(UTC) + timedelta(seconds=60)
        while len(got) < len(events) and datetime.now(UTC) < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg)
    finally:
        consumer.close()
    assert [m.key() for m in got] == [e.aggregate_id() for e in events]  # type: ignore[comparison-overlap]
    assert [OrderPlaced.model_validate(m.value()) for m in got] == events
    assert {dict(header_pairs(m))["ce_type"] for m in got} == {b"OrderPlaced"}


def test_evstream_records_are_read_by_kafkas_java_console_consumer(
    endpoints: Endpoints, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=1)
    events = _evstream_events(3)
    with EventProducer(
        kafka=KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers),
        registry=RegistrySettings(url=endpoints.registry_url),
    ) as producer:
        ids = [producer.publish(e, topic=topic).result(timeout=30).event_id for e in events]
    try:
        libs = LocalStack().state().kafka_libs
    except StackError:
        pytest.skip("Kafka's jars come with the local stack (this session uses another broker)")
    java = find_java(17, env_var="EVSTREAM_JAVA_HOME", purpose="ConsoleConsumer")
    proc = subprocess.run(
        [
            str(java),
            "-Xmx256m",
            "-cp",
            f"{libs}/*",
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            "--bootstrap-server",
            endpoints.bootstrap_servers,
            "--topic",
            topic,
            "--from-beginning",
            "--max-messages",
            str(len(events)),
            "--timeout-ms",
            "30000",
            "--property",
            "print.headers=true",
            "--property",
            "print.key=true",
            "--property",
            "print.value=false",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == len(events), proc.stdout
    for line, event, event_id in zip(lines, events, ids, strict=True):
        assert "ce_type:OrderPlaced" in line
        assert f"ce_id:{event_id}" in line
        assert "ce_source:evstream" in line
        assert line.rstrip().endswith(event.aggregate_id())  # headers, tab, key
