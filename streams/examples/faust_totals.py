"""A faust app on evstream events: orders per customer, and a BRONZE tier on a customer's first order.

Run it as an evstream worker (the ``faust`` extra; /healthz, /readyz and /metrics on port 9102)::

    EVSTREAM_BOOTSTRAP_SERVERS=127.0.0.1:9092 EVSTREAM_REGISTRY_URL=http://127.0.0.1:8081 \\
    EXAMPLE_APP_ID=faust-totals EXAMPLE_ORDERS=orders EXAMPLE_TIERS=customer-tiers \\
        evstream worker evstream.streams.examples.faust_totals:app

It reads ``OrderPlaced`` from ``EXAMPLE_ORDERS``, re-keys them by customer (faust's ``group_by``: a
table is updated from its own key's partition), counts them in a faust table and writes one
``CustomerTierChanged`` per customer to ``EXAMPLE_TIERS``, with evstream's envelope headers and the
order's event id as its causation id. Both topics must exist (``evstream topics apply``).
"""

from __future__ import annotations

import os
from functools import cache

import faust
from confluent_kafka.schema_registry import SchemaRegistryClient

import evstream.streams.transport  # noqa: F401 - registers the evkafka:// consumer transport
from evstream.schemas import AvroCodec, Catalog, Envelope, Event, RegistrySchemaStore
from evstream.schemas.domain import CATALOG, CustomerTier, CustomerTierChanged, OrderPlaced
from evstream.settings import KafkaSettings, RegistrySettings
from evstream.streams.faust_codec import EventCodec
from evstream.streams.faust_worker import broker_credentials

APP_ID = os.environ.get("EXAMPLE_APP_ID", "faust-totals")
ORDERS = os.environ.get("EXAMPLE_ORDERS", "orders")
TIERS = os.environ.get("EXAMPLE_TIERS", "customer-tiers")


@cache
def registry() -> tuple[AvroCodec, Catalog]:
    """The codec and catalog, made on first use (importing this module does no I/O)."""
    client = SchemaRegistryClient(RegistrySettings().client_config())
    return AvroCodec(RegistrySchemaStore(client)), CATALOG


kafka = KafkaSettings()
servers = kafka.bootstrap_servers.split(",")
app = faust.App(
    APP_ID,
    broker=[f"kafka://{server}" for server in servers],
    broker_credentials=broker_credentials(kafka),  # TLS / SASL from EVSTREAM_* (None: PLAINTEXT)
    broker_consumer=[f"evkafka://{server}" for server in servers],  # faust's aiokafka, two fixes
    web_enabled=False,  # `evstream worker` serves /healthz, /readyz and /metrics
    consumer_auto_offset_reset="earliest",
)


def events_on(topic: str) -> faust.Schema[bytes, Event]:
    """Raw keys, evstream events as values."""
    return faust.Schema(key_serializer="raw", value_serializer=EventCodec(topic, resolve=registry))


orders = app.topic(ORDERS, schema=events_on(ORDERS))
# group_by's own repartition topic is named after the agent's module, not the app id: name it
by_customer = app.topic(f"{APP_ID}-orders-by-customer", schema=events_on(ORDERS), internal=True)
tiers = app.topic(TIERS, schema=events_on(TIERS))
order_counts = app.Table("orders-per-customer", default=int)


def is_order(event: Event) -> bool:
    return isinstance(event, OrderPlaced)


def customer_of(order: OrderPlaced) -> str:
    return order.customer_id


@app.agent(orders)
async def count_orders(stream: faust.StreamT[Event]) -> None:
    placed_orders = stream.filter(is_order)  # type: ignore[attr-defined]  # faust's StreamT omits filter
    async for event in placed_orders.group_by(customer_of, name="customer", topic=by_customer).events():
        order: OrderPlaced = event.value
        order_counts[order.customer_id] += 1
        if order_counts[order.customer_id] == 1:
            cause = Envelope.from_headers(event.headers)  # the order's ce_* headers
            envelope = Envelope(
                event_type=CustomerTierChanged.event_type(),
                source=APP_ID,
                correlation_id=cause.correlation_id or str(cause.event_id),
                causation_id=str(cause.event_id),
            )
            change = CustomerTierChanged(
                customer_id=order.customer_id, tier=CustomerTier.BRONZE, orders=1, changed_at=order.placed_at
            )
            headers = [(k, v) for k, v in envelope.to_headers() if isinstance(v, bytes)]  # all are bytes
            await tiers.send(key=order.customer_id, value=change, headers=headers)
