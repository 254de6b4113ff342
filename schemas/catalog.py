"""A catalog maps event type names to models and validates raw data into events."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from evstream.errors import ConfigError, EventValidationError, UnknownEventTypeError
from evstream.imports import import_object
from evstream.schemas.events import Event

__all__ = ["Catalog", "load_catalog", "validate_event"]


def validate_event(model: type[Event], data: Mapping[str, Any]) -> Event:
    """Build ``model`` from ``data``; the error names the first failing field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(event)"
        raise EventValidationError(model.event_type(), field, first["msg"]) from exc


class Catalog:
    """The event types a service publishes or consumes, by name."""

    def __init__(self, models: Iterable[type[Event]]) -> None:
        self._by_type: dict[str, type[Event]] = {}
        for model in models:
            if not model.topic or not model.aggregate_field:
                raise ConfigError(f"{model.__name__} must declare topic and aggregate_field")
            if model.event_type() in self._by_type:
                raise ConfigError(f"event type {model.event_type()!r} is in the catalog twice")
            self._by_type[model.event_type()] = model

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

    def validate(self, event_type: str, data: Mapping[str, Any]) -> Event:
        """Validate raw ``data`` (e.g. parsed JSON) as ``event_type``."""
        return validate_event(self.model(event_type), data)


def load_catalog(spec: str) -> Catalog:
    """Import a catalog from ``module:attribute`` (e.g. ``evstream.schemas.domain:CATALOG``)."""
    return import_object(spec, Catalog, default_attr="CATALOG")
