"""``evstream demo``: the demo pipeline end to end on whatever stack the settings point at.

Applies the demo topics, registers the committed schema history, publishes a small order story
(customers register, orders are placed, paid, shipped or cancelled) with :class:`EventProducer`,
then reads exactly those offsets back with the Avro codec and prints what happened. Last, a
consumer group ``demo-mailer`` reads part of ``orders`` and dead-letters one record, so the web
console's Groups, Dead letters and Replay pages have something to show (:func:`leave_for_console`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import httpx
import typer
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from evstream.consumers import ConsumerRunner, ConsumerSettings, Handlers
from evstream.consumers.groups import describe_group, list_groups
from evstream.endpoints import kafka_settings, registry_settings
from evstream.errors import DeadLetter, EvstreamError
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
from evstream.settings import KafkaSettings, RegistrySettings, librdkafka_config
from evstream.topics import apply_changes, describe_topics, load_topics_file, plan_changes

__all__ = ["DEMO_DEAD_LETTER_REASON", "DEMO_GROUP", "MailerLeft", "demo", "leave_for_console", "run_demo"]

DEMO_GROUP = "demo-mailer"
DEMO_DEAD_LETTER_REASON = "demo: a dead letter to look at"


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


@dataclass(frozen=True)
class MailerLeft:
    """What :func:`leave_for_console` left: the group, its lag, and whether it ran now."""

    group: str
    topic: str
    handled: int
    dead_lettered: int
    lag: int
    earlier: bool  # the group was there already (an earlier demo run): nothing was consumed now


def leave_for_console(
    kafka: KafkaSettings,
    registry: RegistrySettings,
    *,
    topic: str = "orders",
    group: str = DEMO_GROUP,
    most: int = 20,
) -> MailerLeft:
    """Run consumer group ``group`` (a pretend mailer) over part of ``topic``: it handles half of
    the topic's records (at most ``most``), dead-letters the first order it sees (reason
    :data:`DEMO_DEAD_LETTER_REASON`, to ``<topic>.dlq``, which must exist), commits and stops,
    leaving the rest as lag. When ``group`` exists already (an earlier run) it consumes nothing."""
    admin = AdminClient(librdkafka_config(kafka))
    if any(g.group_id == group for g in list_groups(admin)):
        lag = describe_group(admin, group).total_lag
        return MailerLeft(group, topic, 0, 0, lag, earlier=True)
    metadata = admin.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise EvstreamError(f"demo: no topic {topic!r}: apply the topics file first")
    conf = {**librdkafka_config(kafka), "group.id": group, "enable.auto.commit": False}
    consumer = Consumer(conf)
    try:
        marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10) for p in metadata.partitions}
    finally:
        consumer.close()
    wanted = min(most, max(1, sum(high - low for low, high in marks.values()) // 2))
    handled: list[Event] = []
    dead: list[Event] = []
    handlers = Handlers()

    @handlers.on(OrderPlaced, PaymentCaptured, OrderShipped, OrderCancelled, CustomerRegistered)
    def mail(event: Event) -> None:
        handled.append(event)
        if len(handled) >= wanted:
            runner.stop()  # this record is finished and committed; the rest stays as lag
        if not dead and isinstance(event, OrderPlaced):
            dead.append(event)
            raise DeadLetter(DEMO_DEAD_LETTER_REASON)

    runner = ConsumerRunner(
        group,
        handlers,
        topics=[topic],
        kafka=kafka,
        registry=registry,
        settings=ConsumerSettings(auto_offset_reset="earliest", retry_attempts=1),
    )
    runner.run(until_idle_s=5)
    # the partitions it did not get to: committed at their start, so their lag shows (not "-")
    started = {p.partition for p in describe_group(admin, group).partitions if p.committed is not None}
    rest = [TopicPartition(topic, p, low) for p, (low, _high) in sorted(marks.items()) if p not in started]
    if rest:
        consumer = Consumer(conf)
        try:
            consumer.commit(offsets=rest, asynchronous=False)
        finally:
            consumer.close()
    lag = describe_group(admin, group).total_lag
    return MailerLeft(group, topic, len(handled), len(dead), lag, earlier=False)


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
    left = leave_for_console(kafka, registry_conf)
    if left.earlier:
        console.print(
            f"consumer group {left.group} (left by an earlier demo run) is {left.lag} behind on "
            f"{left.topic}; its dead letter is in {left.topic}.dlq"
        )
    else:
        console.print(
            f"for the web console: consumer group {left.group} read {left.handled} of {left.topic} "
            f"and is {left.lag} behind; it dead-lettered {left.dead_lettered} record to "
            f'{left.topic}.dlq ("{DEMO_DEAD_LETTER_REASON}")'
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
