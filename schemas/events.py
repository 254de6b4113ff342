"""The event base model and the envelope that travels in Kafka headers.

An :class:`Event` is the Avro body: domain fields only, one Avro record per event type. Its
:class:`Envelope` (id, type, time, source, correlation, causation, trace context) travels as
CloudEvents-style Kafka headers (``ce_id``, ``ce_type``, ...), so the body stays lean for any
Confluent-compatible reader and the envelope is readable without decoding the body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from uuid import UUID

import uuid6
from dataclasses_avroschema.pydantic import AvroBaseModel
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evstream.errors import EnvelopeError

__all__ = ["Compatibility", "Envelope", "Event"]

Compatibility = Literal[
    "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE", "NONE"
]
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/avro"


class Event(AvroBaseModel):
    """Base of every domain event.

    Subclasses declare ``topic`` (one topic per aggregate, so its events keep their order),
    ``aggregate_field`` (the field whose value is the Kafka key) and optionally
    ``compatibility`` (the subject's mode, BACKWARD by default), plus an inner ``Meta`` with
    the Avro ``namespace``. Instances are frozen and reject unknown fields.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: ClassVar[str] = ""
    aggregate_field: ClassVar[str] = ""
    compatibility: ClassVar[Compatibility] = "BACKWARD"

    def aggregate_id(self) -> str:
        """The Kafka key: the aggregate this event belongs to."""
        return str(getattr(self, self.aggregate_field))

    @classmethod
    def event_type(cls) -> str:
        """The name used in ``ce_type`` headers, the CLI and the gateway (the class name)."""
        return cls.__name__

    @classmethod
    def avro_schema_dict(cls) -> dict[str, Any]:
        """The generated Avro schema as a dict (cached per class)."""
        cached: dict[str, Any] | None = cls.__dict__.get("_evstream_schema")
        if cached is None:
            cached = json.loads(cls.avro_schema())
            cls._evstream_schema = cached  # type: ignore[attr-defined]
        return cached

    @classmethod
    def record_name(cls) -> str:
        """The Avro full name, ``namespace.Name``."""
        schema = cls.avro_schema_dict()
        return f"{schema['namespace']}.{schema['name']}" if schema.get("namespace") else str(schema["name"])

    @classmethod
    def subject(cls) -> str:
        """The registry subject, topic + record name strategy: ``<topic>-<namespace.Name>``."""
        return f"{cls.topic}-{cls.record_name()}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """Metadata of one published event, carried as Kafka headers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID = Field(default_factory=uuid6.uuid7, description="Time-ordered (UUIDv7) unless given.")
    event_type: str
    occurred_at: datetime = Field(default_factory=_utcnow)
    source: str = "evstream"
    correlation_id: str | None = None
    causation_id: str | None = None
    traceparent: str | None = None

    @field_validator("traceparent")
    @classmethod
    def _w3c(cls, value: str | None) -> str | None:
        if value is not None and not _TRACEPARENT.match(value):
            raise ValueError("traceparent must be W3C trace context: 00-<32 hex>-<16 hex>-<2 hex>")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("occurred_at must carry a timezone")
        return value

    def to_headers(self) -> list[tuple[str, str | bytes | None]]:
        """CloudEvents binary-mode headers (``ce_*``) plus ``traceparent``."""
        headers: list[tuple[str, str | bytes | None]] = [
            ("ce_specversion", SPEC_VERSION.encode()),
            ("ce_id", str(self.event_id).encode()),
            ("ce_type", self.event_type.encode()),
            ("ce_source", self.source.encode()),
            ("ce_time", self.occurred_at.isoformat().encode()),
            ("content-type", CONTENT_TYPE.encode()),
        ]
        if self.correlation_id is not None:
            headers.append(("ce_correlationid", self.correlation_id.encode()))
        if self.causation_id is not None:
            headers.append(("ce_causationid", self.causation_id.encode()))
        if self.traceparent is not None:
            headers.append(("traceparent", self.traceparent.encode()))
        return headers

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, str | bytes | None] | Iterable[tuple[str, str | bytes | None]] | None
    ) -> Envelope:
        """Read an envelope back; raises :class:`EnvelopeError` if required headers are missing."""
        pairs = headers.items() if isinstance(headers, Mapping) else headers or []
        found = {
            key: value.decode(errors="replace") if isinstance(value, bytes) else (value or "")
            for key, value in pairs
        }
        missing = [h for h in ("ce_id", "ce_type", "ce_time") if h not in found]
        if missing:
            raise EnvelopeError(f"missing envelope header(s): {', '.join(missing)}")
        try:
            return cls(
                event_id=UUID(found["ce_id"]),
                event_type=found["ce_type"],
                occurred_at=datetime.fromisoformat(found["ce_time"]),
                source=found.get("ce_source", ""),
                correlation_id=found.get("ce_correlationid"),
                causation_id=found.get("ce_causationid"),
                traceparent=found.get("traceparent"),
            )
        except (ValueError, ValidationError) as exc:
            raise EnvelopeError(f"malformed envelope headers: {exc}") from exc
