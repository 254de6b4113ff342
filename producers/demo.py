"""``evstream demo``: the demo pipeline end to end on whatever stack the settings point at.

Applies the demo topics, registers the committed schema history, publishes a small order story
(customers register, orders are placed, paid, shipped or cancelled) with :class:`EventProducer`,
then reads exactly those offsets back with the Avro codec and prints what happened.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Annotated

import httpx
import typer
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from evstream.endpoints import kafka_settings, registry_settings
from evstream.errors import EvstreamError
from evstream.output import console, table
from evstream.producers.delivery import Delivery
from evstream.producers.producer import EventProducer
from evstream.schemas import AvroCodec, Envelope, Event, RecordCoordinates, RegistrySchemaStore, SchemaHistory
from evstream.schemas import register_catalog as register
from evstream.schemas.domain import (
    CATALOG,
    CustomerRegistered,
    Money,
    OrderCancelled,
    OrderPlaced,
    OrderShipped,
    PaymentCaptured,
)
from evstream.schemas.history import DEMO_ROOT
from evstream.schemas.story import demo_story
from evstream.settings import librdkafka_config
from evstream.topics import apply_changes, describe_topics, load_topics_file, plan_changes

__all__ = ["demo", "run_demo"]


def _check_registry(url: str) -> None:
    """Fail with one clear line before producing anything if the registry does not answer."""
    try:
        response = httpx.get(f"{url.rstrip('/')}/subjects", timeout=10)
    except httpx.HTTPError as exc:
        raise EvstreamError(f"schema registry at {url}: unreachable ({exc})") from exc
    if response.status_code != 200:
        raise EvstreamError(f"schema registry at {url}: GET /subjects answered {response.status_code}")


def _read_back(
    conf: dict[str, object], codec: AvroCodec, deliveries: list[Delivery]
) -> list[tuple[Delivery, Event]]:
    """Read exactly the delivered offsets and decode them into their models."""
    wanted = {(d.topic, d.partition, d.offset): d for d in deliveries}
    start: dict[tuple[str, int], int] = defaultdict(lambda: 1 << 62)
    for d in deliveries:
        start[(d.topic, d.partition)] = min(start[(d.topic, d.partition)], d.offset)
    consumer = Consumer({**conf, "group.id": "evstream-demo-reader", "enable.auto.commit": False})
    consumer.assign([TopicPartition(t, p, o) for (t, p), o in start.items()])
    got: list[tuple[Delivery, Event]] = []
    deadline = time.monotonic() + 30
    try:
        while wanted and time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=0.5):
                delivery = wanted.pop((msg.topic() or "", msg.partition() or 0, msg.offset() or 0), None)
                if msg.error() is not None or delivery is None:
                    continue
                env = Envelope.from_headers(msg.headers())
                model = CATALOG.model(env.event_type)
                where = RecordCoordinates(msg.topic() or "", msg.partition(), msg.offset())
                record = codec.decode(msg.value(), model.avro_schema_dict(), where=where)
                got.append((delivery, model.model_validate(record)))
    finally:
        consumer.close()
    if wanted:
        raise EvstreamError(f"demo: {len(wanted)} event(s) not read back within 30s")
    return got


def run_demo(topics_file: Path, *, orders: int = 3) -> list[tuple[Delivery, Event]]:
    """Apply topics, register schemas, publish the story for ``orders`` orders, read it back."""
    kafka, registry_conf = kafka_settings(), registry_settings()
    conf = librdkafka_config(kafka)
    admin = AdminClient(conf)
    declared = load_topics_file(topics_file)
    apply_changes(
        admin, plan_changes(declared.topics, describe_topics(admin, [t.name for t in declared.topics]))
    )
    _check_registry(registry_conf.url)
    with SchemaRegistryClient(registry_conf.client_config()) as client:
        register(CATALOG, SchemaHistory(DEMO_ROOT), client)  # the demo's own history
        events = demo_story(orders)
        with EventProducer(kafka=kafka, registry=registry_conf, settings=None) as producer:
            futures = [producer.publish(e, source="evstream-demo", correlation_id="demo") for e in events]
            producer.flush(30)
            deliveries = [f.result(timeout=30) for f in futures]
        console.print(f"published {len(deliveries)} events to {kafka.bootstrap_servers}")
        consumed = _read_back(conf, AvroCodec(RegistrySchemaStore(client)), deliveries)
    table(
        f"read back {len(consumed)} events, decoded with the registry's schemas",
        ["topic", "part", "offset", "type", "key", "what happened"],
        [
            [d.topic, d.partition, d.offset, d.event_type, e.aggregate_id(), _details(e)]
            for d, e in sorted(consumed, key=lambda de: (de[0].topic, de[0].partition, de[0].offset))
        ],
    )
    return consumed


def _money(money: Money) -> str:
    return f"{money.amount_minor / 100:.2f} {money.currency}"


def _details(event: Event) -> str:
    """One short line per event, for people."""
    match event:
        case CustomerRegistered():
            return f"{event.name} <{event.email}>, {event.country}"
        case OrderPlaced():
            items = ", ".join(f"{line.quantity} x {line.sku}" for line in event.lines)
            return f"{items}; total {_money(event.total)}"
        case PaymentCaptured():
            return f"{_money(event.amount)} by {event.method}"
        case OrderShipped():
            return f"{event.carrier} {event.tracking_number}"
        case OrderCancelled():
            return str(event.reason)
    return ""


def demo(
    topics_file: Annotated[
        Path, typer.Option("--file", "-f", help="Topics declaration to apply first.")
    ] = Path("deploy/topics.yaml"),
    orders: Annotated[int, typer.Option(min=1, max=200, help="How many orders the story has.")] = 3,
) -> None:
    """Publish a small order story (Avro via the registry) and read it back, printing every event."""
    run_demo(topics_file, orders=orders)
