"""The demo stream app: running totals per customer, revenue per tumbling minute, customer
tiers derived and published as ``CustomerTierChanged`` (enriched from the customers table).

Topology (all values are evstream events through :class:`evstream.streams.codec.EventCodec`)::

    customers ──► track_customers ──► table "customers"         (name, email; by customer_id)
    orders ────► route (OrderPlaced) ──► <app>-orders-by-customer (re-keyed by customer_id)
                 ──► aggregate ──► table "customer-totals"       (per currency, order ids, tier)
                               ──► table "revenue" (tumbling)    (per currency and partition)
                               ──► customer-tiers topic          (CustomerTierChanged)

Exactness under at-least-once: every aggregate remembers the event ids (``ce_id``, forwarded
with the record) it already counted, inside the same changelog record as the sums, so a record
processed again after a crash (or forwarded twice to the by-customer topic) is not counted twice. Revenue is
kept per currency *and* partition (each key written from one partition only) and summed on read.
A derived event has a deterministic id (customer, tier, order count): re-emitted after a crash,
it is the same event, which a consumer's dedupe store drops.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import faust
from confluent_kafka.schema_registry import SchemaRegistryClient

from evstream.schemas import AvroCodec, RegistrySchemaStore
from evstream.schemas.domain import (
    CATALOG,
    CustomerRegistered,
    CustomerTier,
    CustomerTierChanged,
    CustomerUpdated,
    OrderPlaced,
)
from evstream.schemas.events import envelope_headers
from evstream.settings import KafkaSettings, RegistrySettings
from evstream.streams import transport
from evstream.streams.codec import EventCodec
from evstream.streams.settings import StreamsSettings

__all__ = ["create_app", "tier_for"]

_IDS = uuid.UUID("6f1c3f0e-2b1e-4b8e-9d1a-6a1f3c2e9b10")  # namespace of derived event ids


def _pairs(headers: Any) -> dict[str, bytes]:
    """faust hands headers over as a dict or a list of pairs: always a dict here."""
    items = headers.items() if isinstance(headers, dict) else headers or []
    return {k: v if isinstance(v, bytes) else str(v).encode() for k, v in items}


def tier_for(orders: int) -> CustomerTier:
    """bronze for 1-2 orders, silver for 3-9, gold for 10 or more."""
    return CustomerTier.GOLD if orders >= 10 else CustomerTier.SILVER if orders >= 3 else CustomerTier.BRONZE


def create_app(
    settings: StreamsSettings | None = None,
    kafka: KafkaSettings | None = None,
    registry: RegistrySettings | None = None,
) -> faust.App:
    """Build the app (no I/O: topics are created and the registry is asked when the worker runs)."""
    settings = settings or StreamsSettings()
    kafka = kafka or KafkaSettings()
    registry = registry or RegistrySettings()
    codec = AvroCodec(RegistrySchemaStore(SchemaRegistryClient(registry.client_config())))
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in kafka.bootstrap_servers.split(",")],
        # faust's aiokafka consumer, fixed to never skip a partition after a rebalance (see the module)
        broker_consumer=[f"{transport.SCHEME}://{server}" for server in kafka.bootstrap_servers.split(",")],
        store=settings.store,
        datadir=str(settings.data_dir or f"{settings.app_id}-data"),
        processing_guarantee=settings.processing_guarantee,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        web_enabled=False,  # the worker serves /healthz, /readyz and /metrics itself
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
    )

    def topic(name: str, **options: Any) -> faust.TopicT:
        return app.topic(name, value_serializer=EventCodec(name, codec, CATALOG), **options)

    orders, customers, tiers = (
        topic(settings.orders_topic),
        topic(settings.customers_topic),
        topic(settings.tiers_topic),
    )
    by_customer = topic(
        f"{settings.app_id}-orders-by-customer", partitions=settings.partitions, internal=True
    )
    people = app.Table("customers", default=dict, partitions=settings.partitions)
    totals = app.Table("customer-totals", default=dict, partitions=settings.partitions)
    revenue = (
        app.Table("revenue", default=dict, partitions=settings.partitions)
        .tumbling(settings.window_s, expires=timedelta(days=30))
        .relative_to(lambda event: event.value.placed_at)  # type: ignore[attr-defined]  # event time
    )

    @app.agent(customers)
    async def track_customers(stream: faust.StreamT[Any]) -> None:
        async for event in stream:
            if isinstance(event, CustomerRegistered):
                people[event.customer_id] = {"name": event.name, "email": event.email}
            elif isinstance(event, CustomerUpdated):
                known = dict(people[event.customer_id])
                changes = {"name": event.name, "email": event.email}
                people[event.customer_id] = known | {k: v for k, v in changes.items() if v is not None}

    @app.agent(orders)
    async def route(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            if isinstance(event.value, OrderPlaced):  # re-key by customer: one worker owns each customer
                headers = list(_pairs(event.headers).items())  # ce_id travels along: the dedupe key
                await by_customer.send(
                    key=event.value.customer_id.encode(), value=event.value, headers=headers
                )

    @app.agent(by_customer)
    async def aggregate(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            event_id = _pairs(event.headers).get("ce_id", b"").decode()
            if event_id:  # an event without an id cannot be deduplicated: not counted
                await _count(event.value, event_id, event.message.partition)

    async def _count(order: OrderPlaced, event_id: str, partition: int) -> None:
        currency, amount = order.total.currency.value, order.total.amount_minor
        state = dict(totals[order.customer_id])
        counted = state.get("events", [])
        if event_id not in counted:
            sums = dict(state.get("total_minor", {}))
            sums[currency] = sums.get(currency, 0) + amount
            previous = state.get("tier")
            tier = tier_for(len(counted) + 1)
            if tier.value != previous:  # emitted before the state records it: a crash re-emits, never loses
                await _tier_changed(order, previous, tier, len(counted) + 1)
            totals[order.customer_id] = {
                "total_minor": sums,
                "events": [*counted, event_id],
                "tier": tier.value,
            }
        key = f"{currency}#p{partition}"
        window = dict(revenue[key].value())  # .value(): the window of relative_to (event time)
        if event_id not in window.get("events", []):
            revenue[key] = {
                "sum": window.get("sum", 0) + amount,
                "events": [*window.get("events", []), event_id],
            }

    async def _tier_changed(order: OrderPlaced, previous: str | None, tier: CustomerTier, count: int) -> None:
        who = people.get(order.customer_id) or {}
        derived = CustomerTierChanged(
            customer_id=order.customer_id,
            previous_tier=CustomerTier(previous) if previous else None,
            tier=tier,
            orders=count,
            name=who.get("name"),
            email=who.get("email"),
            changed_at=order.placed_at,
        )
        event_id = uuid.uuid5(_IDS, f"{order.customer_id}:{tier.value}:{count}")
        headers = envelope_headers(
            event_id, derived.event_type(), None, settings.app_id, correlation_id=order.order_id
        )
        await tiers.send(
            key=order.customer_id.encode(),
            value=derived,
            headers=[(k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in headers],
        )

    return app


app = create_app()
"""The demo app configured from the environment: ``evstream worker evstream.streams.demo:app``."""
