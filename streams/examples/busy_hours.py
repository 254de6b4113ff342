"""3+ orders in an hour (event time): promoted to silver when the hour closes. Run it with
``evstream worker evstream.streams.examples.busy_hours`` (topics: EXAMPLE_ORDERS, EXAMPLE_TIERS)."""

import os
from datetime import timedelta

from pydantic import BaseModel

from evstream.schemas.domain import CATALOG, CustomerTier, CustomerTierChanged, OrderPlaced
from evstream.streams import App, Received, Window

app = App("busy-hours", catalog=CATALOG)
orders = app.events_topic(os.environ.get("EXAMPLE_ORDERS", "orders"))
tiers = app.events_topic(os.environ.get("EXAMPLE_TIERS", "customer-tiers"))
late = app.events_topic(f"{app.app_id}-late-orders", internal=True)
by_customer = app.group_by(orders, OrderPlaced, key=lambda o: o.customer_id, name="orders-by-customer")


class Hour(BaseModel):
    orders: int = 0


async def closed(customer: str, window: Window, hour: Hour, received: Received) -> None:
    if hour.orders >= 3:  # final: a closed hour no longer changes
        silver = CustomerTierChanged(
            customer_id=customer, tier=CustomerTier.SILVER, orders=hour.orders, changed_at=window.end
        )
        await app.publish(silver, cause=received, topic=tiers)


hour, grace = timedelta(hours=1), timedelta(minutes=5)
hours = app.windowed_table("hours", Hour, size=hour, grace=grace, on_close=closed, late_topic=late)


@app.on(by_customer, OrderPlaced, updates=[hours])
async def count(order: OrderPlaced, received: Received) -> None:
    await hours.update(order.customer_id, order.placed_at, lambda h: Hour(orders=h.orders + 1))
