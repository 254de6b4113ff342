"""Codec micro-benchmark: evstream's AvroCodec vs confluent-kafka's AvroSerializer/AvroDeserializer.

Both sides use the same registry (``--registry-url``, default: the running local stack) and
the same ~100-byte record; the registry is hit once up front, so this measures per-event CPU.
Prints microseconds per event (median of ``--runs``) and the ratio. Run:

    .venv/bin/python -m bench.codec [--events 100000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from evstream.endpoints import registry_settings
from evstream.schemas import AvroCodec, RegistrySchemaStore

SCHEMA = {
    "type": "record",
    "name": "BenchOrderPlaced",
    "namespace": "evstream.bench",
    "fields": [
        {"name": "order_id", "type": "string"},
        {"name": "customer_id", "type": "string"},
        {"name": "amount_minor", "type": "long"},
        {"name": "currency", "type": {"type": "enum", "name": "BenchCurrency", "symbols": ["EUR", "USD"]}},
        {"name": "placed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}


def _time(fn: Callable[[], Any], events: int, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) / events * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--registry-url", default=None)
    args = parser.parse_args()

    import json  # noqa: PLC0415

    record = {
        "order_id": "order-12345678",
        "customer_id": "customer-42",
        "amount_minor": 129_99,
        "currency": "EUR",
        "placed_at": datetime(2026, 11, 27, 12, 0, tzinfo=UTC),
        "note": "leave at the door, ring twice",
    }
    topic = f"bench-codec-{uuid.uuid4().hex[:8]}"
    ctx = SerializationContext(topic, MessageField.VALUE)
    with SchemaRegistryClient(registry_settings(args.registry_url).client_config()) as registry:
        codec = AvroCodec(RegistrySchemaStore(registry))
        theirs_out = AvroSerializer(registry, json.dumps(SCHEMA))
        theirs_in = AvroDeserializer(registry)
        encode = codec.encoder(f"{topic}-value", SCHEMA)
        ours_payload = encode(record)
        theirs_payload = theirs_out(record, ctx)
        assert theirs_payload is not None
        codec.decode(theirs_payload)
        theirs_in(ours_payload, ctx)
        print(
            f"payload: {len(ours_payload)} bytes; events per run: {args.events}; runs: {args.runs} (median)"
        )

        rows = [
            (
                "encode",
                _time(
                    lambda: [encode(record) for _ in range(args.events)],
                    args.events,
                    args.runs,
                ),
                _time(lambda: [theirs_out(record, ctx) for _ in range(args.events)], args.events, args.runs),
            ),
            (
                "decode",
                _time(
                    lambda: [codec.decode(ours_payload) for _ in range(args.events)], args.events, args.runs
                ),
                _time(
                    lambda: [theirs_in(ours_payload, ctx) for _ in range(args.events)], args.events, args.runs
                ),
            ),
        ]
    print(f"{'op':<8}{'evstream us/ev':>16}{'confluent us/ev':>17}{'speed-up':>10}")
    for op, ours, theirs in rows:
        print(f"{op:<8}{ours:>16.2f}{theirs:>17.2f}{theirs / ours:>9.2f}x")


if __name__ == "__main__":
    main()
