"""Realistic demo events for tests and benchmarks (seeded, so runs are repeatable)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

from evstream.schemas.domain import (
    CancellationReason,
    Currency,
    CustomerRegistered,
    CustomerUpdated,
    Money,
    OrderCancelled,
    OrderLine,
    OrderPlaced,
    OrderShipped,
    PaymentCaptured,
    PaymentMethod,
)
from evstream.schemas.events import Event

START = datetime(2026, 11, 1, tzinfo=UTC)


def mixed_events(count: int, *, seed: int = 7, orders: int = 300, customers: int = 100) -> list[Event]:
    """``count`` events of all six types over a fixed set of orders and customers."""
    rng = random.Random(seed)
    events: list[Event] = []
    for i in range(count):
        at = START + timedelta(seconds=i)
        order_id, customer_id = f"order-{rng.randrange(orders)}", f"customer-{rng.randrange(customers)}"
        currency = rng.choice(list(Currency))
        amount = Money(amount_minor=rng.randrange(100, 100_000), currency=currency)
        kind = i % 6
        if kind == 0:
            lines = [
                OrderLine(sku=f"SKU-{rng.randrange(50)}", quantity=rng.randrange(1, 4), unit_price=amount)
                for _ in range(rng.randrange(1, 4))
            ]
            total = Money(
                amount_minor=sum(ln.unit_price.amount_minor * ln.quantity for ln in lines), currency=currency
            )
            events.append(
                OrderPlaced(
                    order_id=order_id,
                    customer_id=customer_id,
                    lines=lines,
                    total=total,
                    placed_at=at,
                    shipping_country=rng.choice(["DE", "FR", "GB", "US"]),
                    coupon_code=rng.choice([None, "WELCOME10"]),
                )
            )
        elif kind == 1:
            events.append(
                PaymentCaptured(
                    order_id=order_id,
                    payment_id=f"pay-{i}",
                    amount=amount,
                    method=rng.choice(list(PaymentMethod)),
                    captured_at=at,
                )
            )
        elif kind == 2:
            events.append(
                OrderShipped(
                    order_id=order_id,
                    carrier="DHL",
                    tracking_number=f"TRK{i:08d}",
                    shipped_at=at,
                    estimated_delivery=rng.choice([None, date(2026, 12, 1)]),
                )
            )
        elif kind == 3:
            events.append(
                OrderCancelled(
                    order_id=order_id,
                    reason=rng.choice(list(CancellationReason)),
                    cancelled_at=at,
                    refund=rng.choice([None, amount]),
                )
            )
        elif kind == 4:
            events.append(
                CustomerRegistered(
                    customer_id=customer_id,
                    email=f"{customer_id}@example.com",
                    name=f"Customer {i}",
                    country="DE",
                    registered_at=at,
                    marketing_opt_in=rng.random() < 0.5,
                )
            )
        else:
            events.append(
                CustomerUpdated(
                    customer_id=customer_id,
                    email=None,
                    name=f"Renamed {i}",
                    country=rng.choice([None, "FR"]),
                    updated_at=at,
                )
            )
    return events
