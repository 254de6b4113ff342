"""The demo domain: orders and customers, and the catalog of their event types."""

from evstream.schemas.catalog import Catalog
from evstream.schemas.domain.common import Currency, Money
from evstream.schemas.domain.customers import (
    CustomerEvent,
    CustomerRegistered,
    CustomerTier,
    CustomerTierChanged,
    CustomerUpdated,
)
from evstream.schemas.domain.orders import (
    CancellationReason,
    OrderCancelled,
    OrderEvent,
    OrderLine,
    OrderPlaced,
    OrderShipped,
    PaymentCaptured,
    PaymentMethod,
)

CATALOG = Catalog(
    [
        OrderPlaced,
        PaymentCaptured,
        OrderShipped,
        OrderCancelled,
        CustomerRegistered,
        CustomerUpdated,
        CustomerTierChanged,
    ]
)
"""Every demo event type; the default catalog of ``evstream schemas`` and ``evstream publish``."""

__all__ = [
    "CATALOG",
    "CancellationReason",
    "Currency",
    "CustomerEvent",
    "CustomerRegistered",
    "CustomerTier",
    "CustomerTierChanged",
    "CustomerUpdated",
    "Money",
    "OrderCancelled",
    "OrderEvent",
    "OrderLine",
    "OrderPlaced",
    "OrderShipped",
    "PaymentCaptured",
    "PaymentMethod",
]
