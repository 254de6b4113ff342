"""Customer events. Topic ``customers``, keyed by ``customer_id``."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field

from schemas.events import Event

__all__ = ["CustomerEvent", "CustomerRegistered", "CustomerUpdated"]

_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class CustomerEvent(Event):
    """Base of the events on the ``customers`` topic."""

    topic: ClassVar[str] = "customers"
    aggregate_field: ClassVar[str] = "customer_id"

    customer_id: str = Field(min_length=1, max_length=64)


class CustomerRegistered(CustomerEvent):
    """A new customer signed up."""

    email: str = Field(pattern=_EMAIL)
    name: str = Field(min_length=1, max_length=200)
    country: str = Field(pattern=r"^[A-Z]{2}$")
    registered_at: datetime
    marketing_opt_in: bool = False

    class Meta:
        namespace = "evstream.customers"
        schema_doc = False


class CustomerUpdated(CustomerEvent):
    """A customer changed their details; absent fields are unchanged."""

    email: str | None = Field(default=None, pattern=_EMAIL)
    name: str | None = Field(default=None, min_length=1, max_length=200)
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    updated_at: datetime

    class Meta:
        namespace = "evstream.customers"
        schema_doc = False
