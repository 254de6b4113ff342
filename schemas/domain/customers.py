"""Customer events. Topic ``customers``, keyed by ``customer_id``."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from evstream.schemas.events import Event

__all__ = ["CustomerEvent", "CustomerRegistered", "CustomerTier", "CustomerTierChanged", "CustomerUpdated"]

_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class CustomerEvent(Event, topic="customers", key="customer_id", avro_namespace="evstream.customers"):
    """Base of the events on the ``customers`` topic."""

    customer_id: str = Field(min_length=1, max_length=64)


class CustomerRegistered(CustomerEvent):
    """A new customer signed up."""

    email: str = Field(pattern=_EMAIL)
    name: str = Field(min_length=1, max_length=200)
    country: str = Field(pattern=r"^[A-Z]{2}$")
    registered_at: datetime
    marketing_opt_in: bool = False


class CustomerUpdated(CustomerEvent):
    """A customer changed their details; absent fields are unchanged."""

    email: str | None = Field(default=None, pattern=_EMAIL)
    name: str | None = Field(default=None, min_length=1, max_length=200)
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    updated_at: datetime


class CustomerTier(StrEnum):
    """Loyalty tiers, by number of orders placed: bronze 1-2, silver 3-9, gold 10+."""

    BRONZE = "bronze"
    SILVER = "silver"
    GOLD = "gold"


class CustomerTierChanged(
    Event, topic="customer-tiers", key="customer_id", avro_namespace="evstream.customers"
):
    """Derived by the stream processor when a customer's order count moves them to another tier.

    Enriched with the customer's name and email from the customers table (None when the
    customer was not known when the order was processed).
    """

    customer_id: str = Field(min_length=1, max_length=64)
    previous_tier: CustomerTier | None = None
    tier: CustomerTier
    orders: int = Field(ge=1)
    name: str | None = None
    email: str | None = None
    changed_at: datetime
