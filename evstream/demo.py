"""``evstream demo``: publish a few Avro events through the registry and read them back.

It applies the demo topics, registers an order schema in the registry (Confluent wire format
via confluent-kafka's serializer), produces five events keyed by order id with acks=all and
idempotence, then consumes exactly those offsets back and prints what happened.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError

from evstream.endpoints import kafka_settings, registry_settings
from evstream.errors import EvstreamError
from evstream.output import console, table
from evstream.settings import librdkafka_config
from evstream.topics import apply_changes, describe_topics, load_topics_file, plan_changes

__all__ = ["app", "run_demo"]

TOPIC = "orders"
ORDER_SCHEMA = """
{"type": "record", "name": "DemoOrderPlaced", "namespace": "evstream.demo",
 "fields": [
   {"name": "order_id", "type": "string"},
   {"name": "customer_id", "type": "string"},
   {"name": "amount_minor", "type": "long"},
   {"name": "currency", "type": "string"}
 ]}
"""

app = typer.Typer(help="Publish and consume a few demo events end to end.", invoke_without_command=True)


def _produce(producer: Producer, serializer: AvroSerializer, events: list[dict[str, Any]]) -> list[Message]:
    delivered: list[Message] = []
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err.str())
        else:
            delivered.append(msg)

    ctx = SerializationContext(TOPIC, MessageField.VALUE)
    for event in events:
        producer.produce(TOPIC, key=event["order_id"], value=serializer(event, ctx), on_delivery=on_delivery)
    remaining = producer.flush(30)
    if errors or remaining:
        raise EvstreamError(f"demo produce failed: {errors or f'{remaining} event(s) not delivered in 30s'}")
    return delivered


def _consume_back(
    conf: dict[str, Any], deserializer: AvroDeserializer, delivered: list[Message]
) -> list[tuple[Message, dict[str, Any]]]:
    start: dict[int, int] = {}
    for sent in delivered:
        part, off = sent.partition(), sent.offset()
        if part is not None and off is not None:
            start[part] = min(start.get(part, off), off)
    wanted = {(m.partition(), m.offset()) for m in delivered}
    consumer = Consumer({**conf, "group.id": f"evstream-demo-{uuid.uuid4()}", "enable.auto.commit": False})
    consumer.assign([TopicPartition(TOPIC, p, o) for p, o in start.items()])
    got: list[tuple[Message, dict[str, Any]]] = []
    deadline = time.monotonic() + 30
    try:
        while wanted and time.monotonic() < deadline:
            msg: Message | None = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            if (msg.partition(), msg.offset()) in wanted:
                wanted.discard((msg.partition(), msg.offset()))
                value = deserializer(msg.value(), SerializationContext(TOPIC, MessageField.VALUE))
                if not isinstance(value, dict):
                    raise EvstreamError(f"demo consume: offset {msg.offset()} did not decode to a record")
                got.append((msg, value))
    finally:
        consumer.close()
    if wanted:
        raise EvstreamError(f"demo consume: {len(wanted)} event(s) not read back within 30s")
    return got


def _check_registry(url: str) -> None:
    """Fail with one clear line before producing anything if the registry does not answer."""
    try:
        response = httpx.get(f"{url.rstrip('/')}/subjects", timeout=10)
    except httpx.HTTPError as exc:
        raise EvstreamError(f"schema registry at {url}: unreachable ({exc})") from exc
    if response.status_code != 200:
        raise EvstreamError(f"schema registry at {url}: GET /subjects answered {response.status_code}")


def run_demo(topics_file: Path, *, count: int = 5) -> list[tuple[Message, dict[str, Any]]]:
    """Apply the demo topics, produce ``count`` events through the registry, read them back."""
    settings = kafka_settings()
    registry_conf = registry_settings()
    conf = librdkafka_config(settings)
    admin = AdminClient(conf)
    declared = load_topics_file(topics_file)
    apply_changes(
        admin, plan_changes(declared.topics, describe_topics(admin, [t.name for t in declared.topics]))
    )

    _check_registry(registry_conf.url)
    producer = Producer({**conf, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    events = [
        {
            "order_id": f"order-{uuid.uuid4().hex[:8]}",
            "customer_id": f"customer-{i % 2 + 1}",
            "amount_minor": 1999 + 1000 * i,
            "currency": "EUR",
        }
        for i in range(count)
    ]
    with SchemaRegistryClient(registry_conf.client_config()) as registry:
        try:
            delivered = _produce(producer, AvroSerializer(registry, ORDER_SCHEMA), events)
            console.print(f"produced {len(delivered)} events to {TOPIC!r} at {settings.bootstrap_servers}")
            consumed = _consume_back(conf, AvroDeserializer(registry), delivered)
        except (SchemaRegistryError, SerializationError) as exc:
            raise EvstreamError(f"schema registry at {registry_conf.url}: {exc}") from exc
    table(
        f"consumed {len(consumed)} events back (Avro, schema from {registry_conf.url})",
        ["partition", "offset", "key", "customer", "amount", "currency"],
        [
            [
                m.partition(),
                m.offset(),
                (m.key() or b"").decode(),
                v["customer_id"],
                f"{v['amount_minor'] / 100:.2f}",
                v["currency"],
            ]
            for m, v in sorted(consumed, key=lambda mv: (mv[0].partition() or 0, mv[0].offset() or 0))
        ],
    )
    return consumed


@app.callback()
def demo(
    topics_file: Annotated[
        Path, typer.Option("--file", "-f", help="Topics declaration to apply first.")
    ] = Path("deploy/topics.yaml"),
    count: Annotated[int, typer.Option(min=1, max=1000, help="How many events to publish.")] = 5,
) -> None:
    """Apply the demo topics, publish COUNT order events (Avro via the registry), consume them back."""
    run_demo(topics_file, count=count)
