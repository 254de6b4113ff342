"""A catalog maps event type names (and Avro record names) to models and validates raw data into events."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError, to_json

from evstream.errors import ConfigError, EventValidationError, UnknownEventTypeError
from evstream.imports import import_object
from evstream.schemas._strict import lone_surrogate
from evstream.schemas.events import DEFAULT_SUBJECT_STRATEGY, Event, SubjectStrategy, subject_name

__all__ = ["Catalog", "load_catalog", "validate_event"]


def validate_event(model: type[Event], data: Mapping[str, Any]) -> Event:
    """Build ``model`` from ``data`` (e.g. parsed JSON), strictly; the error names the first
    failing field and its rule.

    The models' rules apply (:class:`~evstream.schemas.events.Record`); parsed JSON may also hold
    strings that UTF-8 cannot encode (``json.loads`` reads lone surrogates such as ``"\\ud800"``),
    which are refused here, so an event that validates also encodes.
    """
    try:
        event = model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(event)"
        raise EventValidationError(model.event_type(), field, first["msg"]) from exc
    try:
        to_json(data)  # fast (Rust); it fails on a lone surrogate, which the scan then locates
    except PydanticSerializationError:
        where = lone_surrogate(data)
    else:
        where = None
    if where is not None:
        field = ".".join(str(part) for part in where) or "(event)"
        raise EventValidationError(
            model.event_type(), field, "Input should be encodable as UTF-8 (no lone surrogates)"
        )
    return event


class Catalog:
    """The event types a service publishes or consumes, by name.

    ``subject_strategy`` names the registry subjects of the models that declare no strategy of
    their own (Confluent's TopicRecordNameStrategy by default; see :func:`subject_name`). Two
    models may not share a subject (under TopicNameStrategy: one event type per topic), nor an
    Avro full name. Records without a ``ce_type`` header are matched to models by the record
    name of their writer schema: :meth:`for_record`.
    """

    def __init__(
        self, models: Iterable[type[Event]], *, subject_strategy: SubjectStrategy = DEFAULT_SUBJECT_STRATEGY
    ) -> None:
        subject_name(subject_strategy, "", "")  # an unknown strategy fails here, not on first use
        self.subject_strategy: SubjectStrategy = subject_strategy
        self._by_type: dict[str, type[Event]] = {}
        self._by_record: dict[str, type[Event]] = {}
        self._by_short: dict[str, list[type[Event]]] = {}
        subjects: dict[str, type[Event]] = {}
        for model in models:
            if not model.topic or not model.aggregate_field:
                raise ConfigError(f"{model.__name__} must declare topic and aggregate_field")
            if model.event_type() in self._by_type:
                raise ConfigError(f"event type {model.event_type()!r} is in the catalog twice")
            record = model.record_name()
            if record in self._by_record:
                raise ConfigError(
                    f"{model.__name__} and {self._by_record[record].__name__} are both Avro record {record!r}"
                )
            subject = self.subject(model)
            if subject in subjects:
                raise ConfigError(
                    f"{model.__name__} and {subjects[subject].__name__} would share subject {subject!r}"
                    " (TopicNameStrategy allows one event type per topic)"
                )
            subjects[subject] = model
            self._by_type[model.event_type()] = model
            self._by_record[record] = model
            self._by_short.setdefault(record.rpartition(".")[2], []).append(model)

    def __iter__(self) -> Iterator[type[Event]]:
        return iter(self._by_type.values())

    def __len__(self) -> int:
        return len(self._by_type)

    def model(self, event_type: str) -> type[Event]:
        """The model for ``event_type``; :class:`UnknownEventTypeError` lists the known ones."""
        try:
            return self._by_type[event_type]
        except KeyError:
            known = ", ".join(sorted(self._by_type))
            raise UnknownEventTypeError(f"unknown event type {event_type!r}; known: {known}") from None

    def subject(self, model: type[Event], topic: str | None = None) -> str:
        """``model``'s registry subject on ``topic`` (default: its own) under this catalog's strategy."""
        return model.subject(topic, self.subject_strategy)

    def find_record(self, record_name: str) -> type[Event] | None:
        """The model whose Avro record is ``record_name``: by full name, else by short name
        (the part after the last dot) when exactly one model has it; None otherwise."""
        found = self._by_record.get(record_name)
        if found is not None:
            return found
        candidates = self._by_short.get(record_name.rpartition(".")[2], [])
        return candidates[0] if len(candidates) == 1 else None

    def for_record(self, record_name: str) -> type[Event]:
        """:meth:`find_record`, raising :class:`UnknownEventTypeError` naming the record (and, for
        an ambiguous short name, the models it could be)."""
        found = self.find_record(record_name)
        if found is not None:
            return found
        candidates = self._by_short.get(record_name.rpartition(".")[2], [])
        if len(candidates) > 1:
            names = ", ".join(sorted(m.record_name() for m in candidates))
            raise UnknownEventTypeError(
                f"Avro record {record_name!r} matches no full name in the catalog and its short name"
                f" is ambiguous ({names})"
            )
        raise UnknownEventTypeError(f"no model in the catalog for Avro record {record_name!r}")

    def validate(self, event_type: str, data: Mapping[str, Any]) -> Event:
        """Validate raw ``data`` (e.g. parsed JSON) as ``event_type``."""
        return validate_event(self.model(event_type), data)


def load_catalog(spec: str, *, app_dir: str | Path | None = None) -> Catalog:
    """Import a catalog from ``module:attribute`` (e.g. ``evstream.schemas.domain:CATALOG``),
    with ``app_dir`` first on ``sys.path`` when given."""
    return import_object(spec, Catalog, default_attr="CATALOG", app_dir=app_dir)
