"""The tiers of bench/peers that run in evstream's own venv: raw confluent-kafka, confluent-kafka's
Avro (de)serializers with the registry, and evstream. One tier per process::

    .venv/bin/python -m bench.peers.local_tiers <tier> --bootstrap B --registry R --topic T --events N
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import DeserializingConsumer, Producer, SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import (
    MessageField,
    SerializationContext,
    StringDeserializer,
    StringSerializer,
)

from bench.consumer import Rate, raw_run, runner_run
from bench.peers.common import POOL, PRODUCER, Meter, Payment, TierError, payment, produce_loop, tier_main
from bench.publish_modes import publish_rate


def raw_consume(args: argparse.Namespace) -> Rate:
    """Bytes only: ``consume(1000)``, no decoding."""
    return raw_run(args.bootstrap, args.topic, args.events)


def confluent_consume(args: argparse.Namespace) -> Rate:
    """``DeserializingConsumer`` + ``AvroDeserializer``, then ``Payment.model_validate``."""
    registry = SchemaRegistryClient({"url": args.registry})
    consumer = DeserializingConsumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": f"peers-confluent-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "key.deserializer": StringDeserializer(),
            "value.deserializer": AvroDeserializer(registry),
        }
    )
    consumer.subscribe([args.topic])
    meter, validate, poll = Meter(args.events), Payment.model_validate, consumer.poll
    try:
        while True:
            msg = poll(1.0)
            if msg is None:
                meter.waiting()
                continue
            if msg.error() is not None:
                raise TierError(f"consume error: {msg.error()}")
            validate(msg.value())
            if meter.tick():
                return meter.rate()
    finally:
        consumer.close()


def avro_serializer(args: argparse.Namespace) -> AvroSerializer:
    """confluent-kafka's serializer of the pool's models (registers ``<topic>-value``)."""
    registry = SchemaRegistryClient({"url": args.registry})

    def to_dict(model: Payment, _ctx: Any) -> dict[str, Any]:
        return model.model_dump()

    serializer: AvroSerializer = AvroSerializer(registry, args.schema, to_dict)
    return serializer


def raw_produce(args: argparse.Namespace) -> Rate:
    """``Producer.produce`` of pre-encoded values (the pool encoded before the clock)."""
    encode, ctx = avro_serializer(args), SerializationContext(args.topic, MessageField.VALUE)
    pool = [payment(i) for i in range(POOL)]
    values = [encode(m, ctx) for m in pool]
    keys = [m.order_id.encode() for m in pool]
    producer = Producer({"bootstrap.servers": args.bootstrap, **PRODUCER})
    topic, produce = args.topic, producer.produce

    def one(i: int) -> None:
        produce(topic, values[i % POOL], keys[i % POOL])

    return timed_produce(one, producer, args.events)


def confluent_produce(args: argparse.Namespace) -> Rate:
    """``SerializingProducer`` + ``AvroSerializer`` (model_dump as its to_dict) of the pool's models."""
    producer = SerializingProducer(
        {
            "bootstrap.servers": args.bootstrap,
            **PRODUCER,
            "key.serializer": StringSerializer(),
            "value.serializer": avro_serializer(args),
        }
    )
    pool = [payment(i) for i in range(POOL)]
    topic, produce = args.topic, producer.produce

    def one(i: int) -> None:
        event = pool[i % POOL]
        produce(topic, key=event.order_id, value=event)

    return timed_produce(one, producer, args.events)


def timed_produce(one: Callable[[int], None], producer: Producer, count: int) -> Rate:
    """One event outside the clock (schema registered, metadata known), then ``count`` until
    ``flush()`` returns (the topic's end offsets are checked by the caller)."""
    one(0)
    if producer.flush(30) != 0:
        raise TierError("the warm-up event was not delivered")
    meter = Meter(count)
    meter.start()
    produce_loop(one, producer.poll, count)
    if producer.flush(120) != 0:
        raise TierError("flush timed out")
    meter.stop()
    meter.tick(count)
    return meter.rate()


TIERS = {
    "raw-consume": raw_consume,
    "confluent-consume": confluent_consume,
    "evstream-consume": lambda a: runner_run(a.bootstrap, a.registry, a.topic, a.events),
    "evstream-batch": lambda a: runner_run(a.bootstrap, a.registry, a.topic, a.events, batch=True),
    "raw-produce": raw_produce,
    "confluent-produce": confluent_produce,
    "evstream-publish": lambda a: publish_rate("publish", a.bootstrap, a.registry, a.topic, a.events),
    "evstream-bulk": lambda a: publish_rate("bulk", a.bootstrap, a.registry, a.topic, a.events),
}

if __name__ == "__main__":
    tier_main(TIERS)
