"""The demo stream app: running totals per customer, revenue per tumbling minute, customer
tiers derived and published as ``CustomerTierChanged`` (enriched from the customers table).

Topology::

    customers ──► track_customers ──► table "customers"          (name, email; by customer_id)
    orders ────► route (OrderPlaced) ──► <app>-orders-by-customer (re-keyed by customer_id)
                 ──► aggregate ──► table "customer-totals"        (per currency, orders, tier)
                               ──► windowed table "revenue"       (tumbling minutes of placed_at)
                               ──► customer-tiers topic           (CustomerTierChanged)

Written on :mod:`evstream.streams.app`: each update is applied once per source offset (a replay
after a crash, or a record forwarded twice, changes nothing), and the state per key is constant
in size. Revenue is kept per currency *and* partition (a table key is written from one partition)
and summed when read (``views.read_aggregates``).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from evstream.schemas.domain import (
    CATALOG,
    CustomerRegistered,
    CustomerTier,
    CustomerTierChanged,
    CustomerUpdated,
    OrderPlaced,
)
from evstream.settings import KafkaSettings, RegistrySettings
from evstream.streams.app import App
from evstream.streams.context import Received
from evstream.streams.settings import StreamsSettings

__all__ = ["CustomerTotals", "Person", "Revenue", "create_app", "tier_for"]


def tier_for(orders: int) -> CustomerTier:
    """bronze for 1-2 orders, silver for 3-9, gold for 10 or more."""
    return CustomerTier.GOLD if orders >= 10 else CustomerTier.SILVER if orders >= 3 else CustomerTier.BRONZE


class Person(BaseModel):
    name: str | None = None
    email: str | None = None


class CustomerTotals(BaseModel):
    total_minor: dict[str, int] = {}
    orders: int = 0
    tier: CustomerTier | None = None

    def add(self, order: OrderPlaced) -> CustomerTotals:
        currency, amount = order.total.currency.value, order.total.amount_minor
        sums = {**self.total_minor, currency: self.total_minor.get(currency, 0) + amount}
        return CustomerTotals(total_minor=sums, orders=self.orders + 1, tier=tier_for(self.orders + 1))


class Revenue(BaseModel):
    sum_minor: int = 0
    orders: int = 0

    def add(self, order: OrderPlaced) -> Revenue:
        return Revenue(sum_minor=self.sum_minor + order.total.amount_minor, orders=self.orders + 1)


def create_app(
    settings: StreamsSettings | None = None,
    kafka: KafkaSettings | None = None,
    registry: RegistrySettings | None = None,
) -> App:
    """Build the app (no I/O: topics are created and the registry is asked when the worker runs)."""
    settings = settings or StreamsSettings()
    app = App(catalog=CATALOG, settings=settings, kafka=kafka, registry=registry)
    orders = app.events_topic(settings.orders_topic)
    customers = app.events_topic(settings.customers_topic)
    tiers = app.events_topic(settings.tiers_topic)
    by_customer = app.events_topic(f"{app.app_id}-orders-by-customer", internal=True)

    people = app.table("customers", Person)
    totals = app.table("customer-totals", CustomerTotals)
    revenue = app.windowed_table(
        "revenue",
        Revenue,
        size=timedelta(seconds=settings.window_s),
        grace=timedelta(seconds=settings.window_grace_s),
        expires=timedelta(days=30),
    )

    @app.on(customers, CustomerRegistered, CustomerUpdated, updates=[people])
    async def track_customers(event: CustomerRegistered | CustomerUpdated, _: Received) -> None:
        changes = {"name": event.name, "email": event.email}
        people.update(
            event.customer_id, lambda p: p.model_copy(update={k: v for k, v in changes.items() if v})
        )

    @app.on(orders, OrderPlaced)
    async def route(order: OrderPlaced, received: Received) -> None:
        await app.forward(received, by_customer, key=order.customer_id)  # one worker owns each customer

    @app.on(by_customer, OrderPlaced, lookups=[people], updates=[totals, revenue])
    async def aggregate(order: OrderPlaced, received: Received) -> None:
        change = totals.update(order.customer_id, lambda t: t.add(order))
        if change is not None and change.after.tier != change.before.tier:
            who = people.lookup(order.customer_id) or Person()  # missing: emitted without name/email
            tier_changed = CustomerTierChanged(
                customer_id=order.customer_id,
                previous_tier=change.before.tier,
                tier=change.after.tier or CustomerTier.BRONZE,
                orders=change.after.orders,
                name=who.name,
                email=who.email,
                changed_at=order.placed_at,
            )
            await app.publish(tier_changed, cause=received, topic=tiers)
        currency = order.total.currency.value
        await revenue.update(f"{currency}#p{received.partition}", order.placed_at, lambda r: r.add(order))

    return app


app = create_app()
"""The demo app configured from the environment: ``evstream worker evstream.streams.demo:app``."""
