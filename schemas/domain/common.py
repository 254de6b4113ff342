"""Value types shared by the demo domain's events."""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field

from evstream.schemas.events import Record

__all__ = ["Currency", "Money"]


class Currency(StrEnum):
    """ISO 4217 codes the demo shop trades in."""

    EUR = "EUR"
    USD = "USD"
    GBP = "GBP"


class Money(Record):
    """An amount in integer minor units (cents) and its currency: never floats for money."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    amount_minor: int = Field(ge=0)
    currency: Currency

    class Meta:
        namespace = "evstream.common"
        schema_doc = False
