"""A small, realistic story of demo events: customers register, orders are placed, paid, shipped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from evstream.schemas.domain import (
    CancellationReason,
    Currency,
    CustomerRegistered,
    Money,
    OrderCancelled,
    OrderLine,
    OrderPlaced,
    OrderShipped,
    PaymentCaptured,
    PaymentMethod,
)
from evstream.schemas.events import Event

__all__ = ["demo_story"]

_CATALOGUE = [("SKU-TEA-001", 899), ("SKU-MUG-002", 1450), ("SKU-KETTLE-003", 3999)]


def demo_story(orders: int, *, start: datetime | None = None) -> list[Event]:
    """Events for ``orders`` orders by two customers, in the order they happen."""
    at = start or datetime.now(UTC).replace(microsecond=0)
    events: list[Event] = [
        CustomerRegistered(
            customer_id="cust-ada",
            email="ada@example.com",
            name="Ada",
            country="GB",
            registered_at=at,
            marketing_opt_in=True,
        ),
        CustomerRegistered(
            customer_id="cust-linus", email="linus@example.com", name="Linus", country="FI", registered_at=at
        ),
    ]
    for n in range(orders):
        order_id, customer = f"order-{n + 1:04d}", ["cust-ada", "cust-linus"][n % 2]
        sku, price = _CATALOGUE[n % len(_CATALOGUE)]
        quantity = 1 + n % 2
        total = Money(amount_minor=price * quantity, currency=Currency.EUR)
        placed = at + timedelta(minutes=n)
        events.append(
            OrderPlaced(
                order_id=order_id,
                customer_id=customer,
                placed_at=placed,
                shipping_country="DE",
                total=total,
                lines=[
                    OrderLine(
                        sku=sku,
                        quantity=quantity,
                        unit_price=Money(amount_minor=price, currency=Currency.EUR),
                    )
                ],
            )
        )
        if n % 3 == 2:
            events.append(
                OrderCancelled(
                    order_id=order_id,
                    reason=CancellationReason.CUSTOMER_REQUEST,
                    cancelled_at=placed + timedelta(minutes=5),
                )
            )
            continue
        events.append(
            PaymentCaptured(
                order_id=order_id,
                payment_id=f"pay-{n + 1:04d}",
                amount=total,
                method=PaymentMethod.CARD,
                captured_at=placed + timedelta(minutes=1),
            )
        )
        events.append(
            OrderShipped(
                order_id=order_id,
                carrier="DHL",
                tracking_number=f"DHL{n + 1:08d}",
                shipped_at=placed + timedelta(hours=4),
            )
        )
    return events
