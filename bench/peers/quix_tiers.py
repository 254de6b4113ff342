"""The Quix Streams tiers of bench/peers, run in bench/.venv-quix (bench/quix/requirements.txt,
the venv bench/streams.py uses too)::

    bench/.venv-quix/bin/python -m bench.peers.quix_tiers <tier> --bootstrap B ...

Consume: a StreamingDataFrame over the topic with Quix's ``AvroDeserializer`` (the registry),
each value validated into ``Payment``. Produce: ``topic.serialize`` with Quix's
``AvroSerializer`` (the registry; it registers ``<topic>-value``) and ``producer.produce`` from
``app.get_producer()``, as Quix documents producing outside a dataframe.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import uuid
from typing import Any

from quixstreams import Application
from quixstreams.models.serializers.avro import AvroDeserializer, AvroSerializer
from quixstreams.models.serializers.schema_registry import SchemaRegistryClientConfig

from bench.peers.common import IDLE_S, POOL, PRODUCER, Meter, Payment, TierError, payment, tier_main

Rate = tuple[float, float]


def application(args: argparse.Namespace) -> Any:
    return Application(
        broker_address=args.bootstrap,
        consumer_group=f"peers-quix-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        state_dir=tempfile.mkdtemp(),
        producer_extra_config=dict(PRODUCER),
        loglevel="WARNING",
    )


def consume(args: argparse.Namespace) -> Rate:
    app = application(args)
    registry = SchemaRegistryClientConfig(url=args.registry)
    topic = app.topic(
        args.topic,
        key_deserializer="str",
        value_deserializer=AvroDeserializer(schema_registry_client_config=registry),
    )
    meter = Meter(args.events)

    def count(_event: Payment) -> None:
        if meter.tick():
            app.stop()

    sdf = app.dataframe(topic)
    sdf = sdf.apply(Payment.model_validate)
    sdf.update(count)
    app.run(timeout=IDLE_S)  # returns after IDLE_S without a message
    return meter.rate()


def produce(args: argparse.Namespace) -> Rate:
    app = application(args)
    registry = SchemaRegistryClientConfig(url=args.registry)
    serializer = AvroSerializer(json.loads(args.schema), schema_registry_client_config=registry)
    topic = app.topic(args.topic, key_serializer="str", value_serializer=serializer)
    pool = [payment(i) for i in range(POOL)]
    with app.get_producer() as producer:
        serialize, send, name = topic.serialize, producer.produce, topic.name

        def one(i: int) -> None:
            event = pool[i % POOL]
            msg = serialize(key=event.order_id, value=event.model_dump())
            send(topic=name, value=msg.value, key=msg.key)

        one(0)  # the schema registered, metadata known: outside the clock
        if producer.flush(30) != 0:
            raise TierError("the warm-up event was not delivered")
        meter = Meter(args.events)
        meter.start()
        for i in range(args.events):  # Quix's produce() polls, and retries a full queue, itself
            one(i)
        if producer.flush(120) != 0:
            raise TierError("flush timed out")
        meter.stop()
    meter.tick(args.events)
    return meter.rate()


TIERS = {"quix-consume": consume, "quix-produce": produce}

if __name__ == "__main__":
    tier_main(TIERS)
