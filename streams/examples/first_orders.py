"""A customer's first order makes them bronze; the tier event carries their name and email, so
an order that arrives before its customer's registration waits for it (EXAMPLE_WAIT_S, default
60 s; then it is emitted without them). ``evstream worker evstream.streams.examples.first_orders``
(topics: EXAMPLE_ORDERS, EXAMPLE_CUSTOMERS, EXAMPLE_TIERS)."""

import os
from datetime import timedelta

from pydantic import BaseModel

from evstream.schemas.domain import CATALOG, CustomerRegistered, CustomerTierChanged, OrderPlaced
from evstream.schemas.domain import CustomerTier as Tier
from evstream.streams import App, Received, Wait

app = App("first-orders", catalog=CATALOG)
orders = app.events_topic(os.environ.get("EXAMPLE_ORDERS", "orders"))
customers = app.events_topic(os.environ.get("EXAMPLE_CUSTOMERS", "customers"))
tiers = app.events_topic(os.environ.get("EXAMPLE_TIERS", "customer-tiers"))
by_customer = app.group_by(orders, OrderPlaced, key=lambda o: o.customer_id, name="orders-by-customer")


class Person(BaseModel):
    name: str | None = None
    email: str | None = None


class Orders(BaseModel):
    count: int = 0


people, counts = app.table("people", Person), app.table("orders", Orders)
wait = Wait(timedelta(seconds=float(os.environ.get("EXAMPLE_WAIT_S", "60"))), then="emit_without")


@app.on(customers, CustomerRegistered, updates=[people])
async def track(customer: CustomerRegistered, received: Received) -> None:
    people.update(customer.customer_id, lambda _: Person(name=customer.name, email=customer.email))


@app.on(by_customer, OrderPlaced, lookups=[people], updates=[counts], wait=wait)
async def enrich(order: OrderPlaced, received: Received) -> None:
    who = people.lookup(order.customer_id, missing="wait") or Person()  # None: waited max_wait
    change = counts.update(order.customer_id, lambda n: Orders(count=n.count + 1))
    if change is not None and change.before.count == 0:
        first = CustomerTierChanged(
            customer_id=order.customer_id,
            tier=Tier.BRONZE,
            orders=1,
            name=who.name,
            email=who.email,
            changed_at=order.placed_at,
        )
        await app.publish(first, cause=received, topic=tiers)
