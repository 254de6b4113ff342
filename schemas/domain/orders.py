"""Order lifecycle events. Topic ``orders``, keyed by ``order_id`` so one order's events stay in order."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from pydantic import ConfigDict, Field

from evstream.schemas.domain.common import Money
from evstream.schemas.events import Event, Record

__all__ = [
    "CancellationReason",
    "OrderCancelled",
    "OrderEvent",
    "OrderLine",
    "OrderPlaced",
    "OrderShipped",
    "PaymentCaptured",
    "PaymentMethod",
]


class OrderEvent(Event, topic="orders", key="order_id", avro_namespace="evstream.orders"):
    """Base of the events on the ``orders`` topic."""

    order_id: str = Field(min_length=1, max_length=64)


class OrderLine(Record):
    """One product line of an order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: str = Field(min_length=1)
    quantity: int = Field(ge=1, le=10_000)
    unit_price: Money

    class Meta:
        namespace = "evstream.orders"
        schema_doc = False


class PaymentMethod(StrEnum):
    CARD = "CARD"
    PAYPAL = "PAYPAL"
    BANK_TRANSFER = "BANK_TRANSFER"


class CancellationReason(StrEnum):
    CUSTOMER_REQUEST = "CUSTOMER_REQUEST"
    PAYMENT_FAILED = "PAYMENT_FAILED"
    OUT_OF_STOCK = "OUT_OF_STOCK"
    FRAUD_SUSPECTED = "FRAUD_SUSPECTED"


class OrderPlaced(OrderEvent):
    """A customer placed an order."""

    customer_id: str = Field(min_length=1, max_length=64)
    lines: list[OrderLine] = Field(min_length=1)
    total: Money
    placed_at: datetime
    shipping_country: str = Field(pattern=r"^[A-Z]{2}$")
    coupon_code: str | None = None


class PaymentCaptured(OrderEvent):
    """The payment for an order was captured."""

    payment_id: str = Field(min_length=1)
    amount: Money
    method: PaymentMethod
    captured_at: datetime


class OrderShipped(OrderEvent):
    """An order left the warehouse."""

    carrier: str = Field(min_length=1)
    tracking_number: str = Field(min_length=1)
    shipped_at: datetime
    estimated_delivery: date | None = None


class OrderCancelled(OrderEvent):
    """An order was cancelled, possibly with a refund."""

    reason: CancellationReason
    cancelled_at: datetime
    refund: Money | None = None
