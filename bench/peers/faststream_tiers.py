"""The FastStream tiers of bench/peers (confluent backend), run in bench/.venv-faststream::

    bench/.venv-faststream/bin/python -m bench.peers.faststream_tiers <tier> --bootstrap B ...

FastStream has no Avro support of its own: a decoder with confluent-kafka's ``AvroDeserializer``
(registry lookups cached) hands the dict to FastStream, which validates it into the handler's
annotated pydantic model (``Payment``; ``list[Payment]`` for the batch subscriber). Produce
encodes with confluent-kafka's ``AvroSerializer`` and publishes the bytes with a publisher.
FastStream's per-message log lines are off (``logger=None``): its fastest configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from faststream.confluent import KafkaBroker

from bench.peers.common import POOL, PRODUCER, Meter, Payment, TierError, payment, tier_main

Rate = tuple[float, float]
BATCH = 1000  # max_records of the batch subscriber (evstream's runner reads 1000 at a time too)


def broker(bootstrap: str) -> Any:
    producer = {k: v for k, v in PRODUCER.items() if k in {"batch.size", "queue.buffering.max.messages"}}
    return KafkaBroker(
        bootstrap,
        acks="all",
        enable_idempotence=True,
        compression_type=PRODUCER["compression.type"],
        linger_ms=PRODUCER["linger.ms"],
        partitioner=PRODUCER["partitioner"],
        config=producer,
        logger=None,
    )


async def consume(args: argparse.Namespace, *, batch: bool) -> Rate:
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": args.registry}))
    ctx = SerializationContext(args.topic, MessageField.VALUE)
    meter, done = Meter(args.events), asyncio.Event()
    app = broker(args.bootstrap)
    options: dict[str, Any] = {
        "group_id": f"peers-fs-{uuid.uuid4().hex[:8]}",
        "auto_offset_reset": "earliest",
    }

    if batch:

        async def decode_batch(msg: Any) -> Any:
            return [deserialize(body, ctx) for body in msg.body]

        async def handle_batch(events: list[Payment]) -> None:
            if meter.tick(len(events)):
                done.set()

        app.subscriber(args.topic, batch=True, max_records=BATCH, decoder=decode_batch, **options)(
            handle_batch
        )
    else:

        async def decode(msg: Any) -> Any:
            return deserialize(msg.body, ctx)

        async def handle(event: Payment) -> None:
            if meter.tick():
                done.set()

        app.subscriber(args.topic, decoder=decode, **options)(handle)
    await app.start()
    try:
        while not done.is_set():
            try:
                await asyncio.wait_for(done.wait(), 1.0)
            except TimeoutError:
                meter.waiting()
    finally:
        await app.stop()
    return meter.rate()


async def produce(args: argparse.Namespace) -> Rate:
    """``publisher.publish(avro_bytes, key=..., no_confirm=True)`` per event; the delivery
    futures are awaited at the end (one each: every delivery checked)."""
    encode = AvroSerializer(SchemaRegistryClient({"url": args.registry}), args.schema)
    ctx = SerializationContext(args.topic, MessageField.VALUE)
    pool = [payment(i) for i in range(POOL)]
    app = broker(args.bootstrap)
    publisher = app.publisher(args.topic)
    await app.start()
    try:
        await publisher.publish(encode(pool[0].model_dump(), ctx), key=pool[0].order_id)  # confirmed
        meter = Meter(args.events)
        meter.start()
        pending = []
        for i in range(args.events):
            event = pool[i % POOL]
            pending.append(
                await publisher.publish(encode(event.model_dump(), ctx), key=event.order_id, no_confirm=True)
            )
            if i % 1000 == 999:
                await asyncio.sleep(0)  # let FastStream's poll task serve delivery reports
        failed = [
            r for r in await asyncio.gather(*pending, return_exceptions=True) if isinstance(r, BaseException)
        ]
        meter.stop()
        if failed:
            raise TierError(f"{len(failed):,} deliveries failed, e.g. {failed[0]!r}")
        meter.tick(len(pending))
    finally:
        await app.stop()
    return meter.rate()


TIERS = {
    "faststream-consume": lambda a: asyncio.run(consume(a, batch=False)),
    "faststream-batch": lambda a: asyncio.run(consume(a, batch=True)),
    "faststream-produce": lambda a: asyncio.run(produce(a)),
}

if __name__ == "__main__":
    tier_main(TIERS)
