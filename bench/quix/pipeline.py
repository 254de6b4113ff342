"""The demo aggregation written with Quix Streams, for bench/streams.py (runs in bench/.venv-quix).

Per order event: Avro decode with the writer schema from the registry (Quix's ``AvroDeserializer``:
fastavro into a dict, no model validation); only OrderPlaced kept (the records with ``lines`` and
``placed_at``). Per OrderPlaced: a dict of customer id, total and order id, JSON-serialized through
Quix's ``group_by`` repartition topic (re-keyed by customer, the input's partition count) and read
back; the customer's running totals per currency in Quix's state (RocksDB, with a changelog
topic); one JSON record ``{"customer_id", "total_minor"}`` per order to the output topic.

``--guarantee``: Quix's ``processing_guarantee`` (``exactly-once``: each checkpoint, every
``--commit-interval`` seconds, is one Kafka transaction). Runs until SIGTERM/SIGINT, or until it
has produced ``--expect`` updates when given.

    bench/.venv-quix/bin/python bench/quix/pipeline.py --broker B --registry R --topic T --out O \
        [--guarantee at-least-once|exactly-once] [--commit-interval 5] [--group G] [--expect N]
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from typing import Any

from quixstreams import Application
from quixstreams.models.serializers.avro import AvroDeserializer
from quixstreams.models.serializers.schema_registry import SchemaRegistryClientConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--broker", "--registry", "--topic", "--out"):
        parser.add_argument(name, required=True)
    parser.add_argument("--guarantee", choices=("at-least-once", "exactly-once"), default="at-least-once")
    parser.add_argument(
        "--commit-interval", type=float, default=5.0, help="seconds between checkpoints (Quix: 5)"
    )
    parser.add_argument("--group", default=None, help="consumer group (default: a fresh one)")
    parser.add_argument("--state-dir", default=None, help="default: a fresh temporary directory")
    parser.add_argument("--expect", type=int, default=0, help="stop after this many updates (0: never)")
    args = parser.parse_args()
    app = Application(
        broker_address=args.broker,
        consumer_group=args.group or f"quix-bench-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        state_dir=args.state_dir or tempfile.mkdtemp(),
        use_changelog_topics=True,
        processing_guarantee=args.guarantee,
        commit_interval=args.commit_interval,
    )
    orders = app.topic(
        args.topic,
        key_deserializer="str",
        value_deserializer=AvroDeserializer(
            schema_registry_client_config=SchemaRegistryClientConfig(url=args.registry)
        ),
    )
    out = app.topic(args.out, value_serializer="json")
    sdf = app.dataframe(orders)
    sdf = sdf.filter(lambda v: "lines" in v and "placed_at" in v)  # OrderPlaced
    sdf = sdf.apply(  # what the repartition topic carries (JSON: no datetimes)
        lambda v: {"customer_id": v["customer_id"], "total": v["total"], "order_id": v["order_id"]}
    )
    sdf = sdf.group_by(lambda v: v["customer_id"], name="by-customer")
    produced = [0]

    def total(value: dict[str, Any], state: Any) -> dict[str, Any]:
        sums = state.get("sums", {})
        currency = value["total"]["currency"]
        sums[currency] = sums.get(currency, 0) + value["total"]["amount_minor"]
        state.set("sums", sums)
        state.set("orders", state.get("orders", 0) + 1)
        return {"customer_id": value["customer_id"], "total_minor": sums}

    def count(_value: dict[str, Any]) -> None:
        produced[0] += 1
        if produced[0] >= args.expect:
            app.stop()

    sdf = sdf.apply(total, stateful=True)
    sdf = sdf.to_topic(out)
    if args.expect > 0:
        sdf.update(count)
    app.run()


if __name__ == "__main__":
    main()
