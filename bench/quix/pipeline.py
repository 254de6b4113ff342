"""The demo aggregation written with Quix Streams, for bench/streams.py (runs in bench/.venv-quix).

orders (Avro via the registry) -> OrderPlaced only -> re-key by customer -> running totals per
customer and currency (state) -> one update per order to an output topic. Exits when it has
produced ``--expect`` updates.

    bench/.venv-quix/bin/python bench/quix/pipeline.py --broker B --registry R --topic T --out O --expect N
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
    parser.add_argument("--expect", type=int, required=True)
    args = parser.parse_args()
    app = Application(
        broker_address=args.broker,
        consumer_group=f"quix-bench-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        state_dir=tempfile.mkdtemp(),
        use_changelog_topics=True,
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
    sdf.update(count)
    app.run()


if __name__ == "__main__":
    main()
