"""The event base model and the envelope that travels in Kafka headers.

An :class:`Event` is the Avro body: domain fields only, one Avro record per event type. Its
:class:`Envelope` (id, type, time, source, correlation, causation, trace context) travels as
CloudEvents-style Kafka headers (``ce_id``, ``ce_type``, ...), so the body stays lean for any
Confluent-compatible reader and the envelope is readable without decoding the body.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from uuid import UUID

from dataclasses_avroschema.pydantic import AvroBaseModel
from pydantic import BaseModel, ConfigDict, Field, field_validator

from evstream.errors import ConfigError, EnvelopeError
from evstream.schemas import _strict
from evstream.schemas.ids import derived_event_id, new_event_id

__all__ = [
    "DEFAULT_SUBJECT_STRATEGY",
    "Compatibility",
    "Envelope",
    "EnvelopeHeaders",
    "Event",
    "Record",
    "SubjectStrategy",
    "check_traceparent",
    "envelope_headers",
    "subject_name",
]

Compatibility = Literal[
    "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE", "NONE"
]
SubjectStrategy = Literal["TopicRecordNameStrategy", "TopicNameStrategy", "RecordNameStrategy"]
"""Confluent's subject name strategies, by their Java class names."""
DEFAULT_SUBJECT_STRATEGY: SubjectStrategy = "TopicRecordNameStrategy"
_STRATEGIES = frozenset(("TopicRecordNameStrategy", "TopicNameStrategy", "RecordNameStrategy"))


def subject_name(strategy: SubjectStrategy, topic: str, record_name: str) -> str:
    """The registry subject of a value schema under Confluent's ``strategy``.

    ``TopicRecordNameStrategy``: ``<topic>-<namespace.Name>``; ``TopicNameStrategy``:
    ``<topic>-value`` (one event type per topic); ``RecordNameStrategy``: ``<namespace.Name>``.
    """
    if strategy == "TopicNameStrategy":
        return f"{topic}-value"
    if strategy == "RecordNameStrategy":
        return record_name
    if strategy == "TopicRecordNameStrategy":
        return f"{topic}-{record_name}"
    raise ConfigError(f"unknown subject strategy {strategy!r}; use one of {', '.join(sorted(_STRATEGIES))}")


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/avro"


class Record(AvroBaseModel):
    """Base of the records nested in events (``Money``, ``OrderLine``...): strict like :class:`Event`.

    Validation is strict in Python and JSON alike (the rules: :mod:`evstream.schemas._strict`):
    no bool/str/float -> int, no number -> datetime (ISO-8601 strings with a zone, or aware
    datetimes), integers within their Avro ``long``/``int`` range, finite floats, timestamps whose
    UTC instant a reader can decode, enums from their members or value strings; so whatever
    validates also encodes and decodes. Instances are frozen and reject unknown fields. Every
    pydantic model nested in a record or an event must derive from :class:`Record` (or be an
    :class:`Event`): a plain one would validate laxly, so declaring such a field is a ConfigError.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    class Meta:
        schema_doc = False

    @classmethod
    def __pydantic_on_complete__(cls) -> None:
        # Once the fields are resolved: add each field's rule to its metadata (an inherited field
        # has it already) and rebuild the validator once, so that fields without a Python rule
        # cost nothing per validation.
        super().__pydantic_on_complete__()
        changed = False
        for name, info in cls.model_fields.items():
            for nested in _strict.nested_models(info.annotation):
                if not issubclass(nested, Record):
                    raise ConfigError(
                        f"{cls.__name__}.{name}: {nested.__name__} is a plain pydantic model and would"
                        " validate laxly; derive it from evstream.schemas.Record"
                    )
            metadata = _strict.strict_metadata(info.annotation, info.metadata)
            if metadata is not None:
                changed = changed or metadata[:-1] != info.metadata
                info.metadata[:] = metadata
        if changed:
            cls.model_rebuild(force=True)


class Event(Record):
    """Base of every domain event.

    Declare the settings once, as class arguments; subclasses inherit them::

        class OrderEvent(Event, topic="orders", key="order_id", avro_namespace="evstream.orders"):
            order_id: str

        class OrderPlaced(OrderEvent): ...

    ``topic`` (one topic per aggregate, so its events keep their order), ``key`` (the field whose
    value is the Kafka key; the ``aggregate_field`` class variable), ``avro_namespace`` (the Avro
    namespace; not ``namespace``, which pydantic's metaclass takes for the class body),
    ``compatibility`` (the subject's mode, BACKWARD by default) and ``subject_strategy`` (a
    :data:`SubjectStrategy`; unset: the catalog's, by default TopicRecordNameStrategy). The
    older spelling, ``ClassVar`` attributes and an inner ``Meta`` with the namespace, still works.
    Schemas carry no ``doc`` unless ``Meta.schema_doc = True``. Instances are frozen and reject
    unknown fields; validation is strict (:class:`Record`), and records nested in an event derive
    from :class:`Record`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    topic: ClassVar[str] = ""
    aggregate_field: ClassVar[str] = ""
    compatibility: ClassVar[Compatibility] = "BACKWARD"
    subject_strategy: ClassVar[SubjectStrategy | None] = None

    class Meta:
        schema_doc = False

    def __init_subclass__(
        cls,
        *,
        topic: str | None = None,
        key: str | None = None,
        avro_namespace: str | None = None,
        compatibility: Compatibility | None = None,
        subject_strategy: SubjectStrategy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if topic is not None:
            cls.topic = topic
        if key is not None:
            cls.aggregate_field = key
        if compatibility is not None:
            cls.compatibility = compatibility
        if subject_strategy is not None:
            if subject_strategy not in _STRATEGIES:
                raise ConfigError(
                    f"{cls.__name__}: unknown subject_strategy {subject_strategy!r};"
                    f" use one of {', '.join(sorted(_STRATEGIES))}"
                )
            cls.subject_strategy = subject_strategy
        # The Avro options (dataclasses-avroschema's Meta) are inherited attribute by attribute:
        # a class's own Meta, then avro_namespace, over its parent's (Event's: schema_doc False).
        own = cls.__dict__.get("Meta")
        parent = next(b.__dict__["Meta"] for b in cls.__mro__[1:] if "Meta" in b.__dict__)
        if own is not None or avro_namespace is not None:
            bases = (own, parent) if own is not None and own is not parent else (parent,)
            extra = {"namespace": avro_namespace} if avro_namespace is not None else {}
            cls.Meta = type("Meta", bases, extra)  # type: ignore[misc,assignment]  # a built Meta

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
    def subject(cls, topic: str | None = None, strategy: SubjectStrategy | None = None) -> str:
        """The registry subject on ``topic`` (default: the model's) under ``strategy``.

        The strategy is the model's own ``subject_strategy`` if it declares one, else ``strategy``
        (a :class:`Catalog` passes its default), else TopicRecordNameStrategy.
        """
        chosen = cls.subject_strategy or strategy or DEFAULT_SUBJECT_STRATEGY
        return subject_name(chosen, cls.topic if topic is None else topic, cls.record_name())


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """Metadata of one published event, carried as Kafka headers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID = Field(default_factory=new_event_id, description="Time-ordered (UUIDv7) unless given.")
    event_type: str
    occurred_at: datetime = Field(default_factory=_utcnow)
    source: str = "evstream"
    correlation_id: str | None = None
    causation_id: str | None = None
    traceparent: str | None = None

    @classmethod
    def derived(
        cls, event_type: str, topic: str, partition: int, offset: int, timestamp_ms: int | None
    ) -> Envelope:
        """The envelope of a record that carries none (a foreign producer's, no ``ce_*`` headers).

        The id is :func:`evstream.schemas.ids.derived_event_id` of the record's position, so a
        redelivered record has the same id (dedupe works); the time is the record's timestamp
        (now when it has none), the source is the topic; no correlation, causation or trace.
        """
        occurred_at = (
            datetime.fromtimestamp(timestamp_ms / 1000, UTC)
            if timestamp_ms is not None and timestamp_ms >= 0
            else _utcnow()
        )
        return cls.model_construct(
            event_id=derived_event_id(topic, partition, offset),
            event_type=event_type,
            occurred_at=occurred_at,
            source=topic,
            correlation_id=None,
            causation_id=None,
            traceparent=None,
        )

    @field_validator("traceparent")
    @classmethod
    def _w3c(cls, value: str | None) -> str | None:
        return check_traceparent(value)

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("occurred_at must carry a timezone")
        return value

    def to_headers(self) -> list[tuple[str, str | bytes | None]]:
        """CloudEvents binary-mode headers (``ce_*``) plus ``traceparent``."""
        return envelope_headers(
            self.event_id,
            self.event_type,
            self.occurred_at,
            self.source,
            self.correlation_id,
            self.causation_id,
            self.traceparent,
        )

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, str | bytes | None] | Iterable[tuple[str, str | bytes | None]] | None
    ) -> Envelope:
        """Read an envelope back; raises :class:`EnvelopeError` if required headers are missing.

        This runs for every consumed record, so it checks the fields by hand and builds the model
        without pydantic's validation pass (same rules as the validators).
        """
        pairs = headers.items() if isinstance(headers, Mapping) else headers or []
        found: dict[str, str] = {}
        for key, value in pairs:
            if key.startswith("ce_") or key == "traceparent":
                found[key] = value.decode(errors="replace") if isinstance(value, bytes) else (value or "")
        try:
            event_id, event_type, time_text = found["ce_id"], found["ce_type"], found["ce_time"]
        except KeyError:
            missing = [h for h in ("ce_id", "ce_type", "ce_time") if h not in found]
            raise EnvelopeError(f"missing envelope header(s): {', '.join(missing)}") from None
        try:
            occurred_at = datetime.fromisoformat(time_text)
            if occurred_at.tzinfo is None:
                raise ValueError("ce_time must carry a timezone")
            return cls.model_construct(
                event_id=UUID(event_id),
                event_type=event_type,
                occurred_at=occurred_at,
                source=found.get("ce_source", ""),
                correlation_id=found.get("ce_correlationid"),
                causation_id=found.get("ce_causationid"),
                traceparent=check_traceparent(found.get("traceparent")),
            )
        except ValueError as exc:
            raise EnvelopeError(f"malformed envelope headers: {exc}") from exc


_CANONICAL_UUID = re.compile(rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _text(value: str | bytes | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


class EnvelopeHeaders:
    """A record's envelope headers, checked but not parsed: the consume path's envelope.

    :meth:`read` does one pass over the headers and the checks :meth:`Envelope.from_headers`
    would fail on (required headers present, ``ce_id`` a UUID, ``ce_time`` ISO-8601 with a
    timezone, ``traceparent`` W3C), without building anything but ``event_type``: a malformed
    envelope is still refused before a handler runs (the record is dead-lettered), and
    :attr:`envelope` (the :class:`Envelope`, equal to ``from_headers``') is built on first use.
    """

    __slots__ = ("_envelope", "_found", "_time", "event_type")

    def __init__(self, event_type: str, found: dict[str, str | bytes | None], occurred_at: datetime) -> None:
        self.event_type = event_type
        self._found = found
        self._time = occurred_at
        self._envelope: Envelope | None = None

    @classmethod
    def read(
        cls, headers: Mapping[str, str | bytes | None] | Iterable[tuple[str, str | bytes | None]] | None
    ) -> EnvelopeHeaders | None:
        """None when the record has no ``ce_type`` header (a foreign record); :class:`EnvelopeError`
        when it has one and the envelope is malformed."""
        pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
        found: dict[str, str | bytes | None] = {}
        for key, value in pairs:
            if key.startswith("ce_") or key == "traceparent":
                found[key] = value
        if "ce_type" not in found:
            return None
        if "ce_id" not in found or "ce_time" not in found:
            missing = [h for h in ("ce_id", "ce_type", "ce_time") if h not in found]
            raise EnvelopeError(f"missing envelope header(s): {', '.join(missing)}")
        try:
            occurred_at = datetime.fromisoformat(_text(found["ce_time"]))
            if occurred_at.tzinfo is None:
                raise ValueError("ce_time must carry a timezone")
            event_id = found["ce_id"]
            if not (isinstance(event_id, bytes) and _CANONICAL_UUID.fullmatch(event_id)):
                UUID(_text(event_id))  # any other spelling: the full check
            if "traceparent" in found:
                check_traceparent(_text(found["traceparent"]))
        except ValueError as exc:
            raise EnvelopeError(f"malformed envelope headers: {exc}") from exc
        return cls(_text(found["ce_type"]), found, occurred_at)

    @property
    def envelope(self) -> Envelope:
        if self._envelope is None:
            found = self._found
            correlation, causation, trace = (
                _text(found[h]) if h in found else None
                for h in ("ce_correlationid", "ce_causationid", "traceparent")
            )
            self._envelope = Envelope.model_construct(
                event_id=UUID(_text(found["ce_id"])),
                event_type=self.event_type,
                occurred_at=self._time,
                source=_text(found.get("ce_source")),
                correlation_id=correlation,
                causation_id=causation,
                traceparent=trace,
            )
        return self._envelope


def check_traceparent(value: str | None) -> str | None:
    """``value`` if it is W3C trace context (or None); ValueError otherwise."""
    if value is not None and not _TRACEPARENT.match(value):
        raise ValueError("traceparent must be W3C trace context: 00-<32 hex>-<16 hex>-<2 hex>")
    return value


_SPEC = SPEC_VERSION.encode()
_clock: tuple[int, bytes] = (0, b"")


def _now_iso() -> bytes:
    """The current UTC time as ISO-8601 bytes, cached for the current millisecond."""
    global _clock  # noqa: PLW0603 - a one-entry cache; a race only recomputes it
    ms = time.time_ns() // 1_000_000
    if _clock[0] != ms:
        _clock = (ms, datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").encode())
    return _clock[1]


_CONTENT = CONTENT_TYPE.encode()
# Header tuples that do not change per event, encoded once (per event type and source).
_SPEC_HEADER: tuple[str, bytes] = ("ce_specversion", _SPEC)
_CONTENT_HEADER: tuple[str, bytes] = ("content-type", _CONTENT)
_CONSTANT_HEADERS: dict[tuple[str, str], tuple[tuple[str, bytes], tuple[str, bytes]]] = {}


def envelope_headers(
    event_id: UUID,
    event_type: str,
    occurred_at: datetime | None,
    source: str,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    traceparent: str | None = None,
) -> list[tuple[str, str | bytes | None]]:
    """The header list of an envelope, built without a model (the publish hot path uses this).

    ``occurred_at=None`` means now, formatted once per millisecond.
    """
    constant = _CONSTANT_HEADERS.get((event_type, source))
    if constant is None:
        if len(_CONSTANT_HEADERS) > 10_000:  # bounded: event types x sources is small in practice
            _CONSTANT_HEADERS.clear()
        constant = _CONSTANT_HEADERS[(event_type, source)] = (
            ("ce_type", event_type.encode()),
            ("ce_source", source.encode()),
        )
    headers: list[tuple[str, str | bytes | None]] = [
        _SPEC_HEADER,
        ("ce_id", str(event_id).encode()),
        constant[0],
        constant[1],
        ("ce_time", _now_iso() if occurred_at is None else occurred_at.isoformat().encode()),
        _CONTENT_HEADER,
    ]
    if correlation_id is not None:
        headers.append(("ce_correlationid", correlation_id.encode()))
    if causation_id is not None:
        headers.append(("ce_causationid", causation_id.encode()))
    if traceparent is not None:
        headers.append(("traceparent", traceparent.encode()))
    return headers
