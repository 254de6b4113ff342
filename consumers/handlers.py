"""Typed handler registration: a handler gets the decoded event and the record's context."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from evstream.errors import ConfigError
from schemas.events import Envelope, Event

__all__ = ["Handler", "Handlers", "MessageContext"]

E = TypeVar("E", bound=Event)


@dataclass(frozen=True, slots=True)
class MessageContext:
    """Where an event came from and its envelope."""

    topic: str
    partition: int
    offset: int
    timestamp: datetime | None
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    envelope: Envelope
    attempt: int


Handler = Callable[[Any, MessageContext], Awaitable[None] | None]


class Handlers:
    """Event type -> handler. Use ``@handlers.on(OrderPlaced, OrderShipped)`` on a function taking
    ``(event, ctx)``; it may be ``async``. One handler per event type."""

    def __init__(self) -> None:
        self._by_type: dict[str, tuple[type[Event], Handler]] = {}

    def on(
        self, *models: type[E]
    ) -> Callable[[Callable[[E, MessageContext], Any]], Callable[[E, MessageContext], Any]]:
        def register(fn: Callable[[E, MessageContext], Any]) -> Callable[[E, MessageContext], Any]:
            for model in models:
                if model.event_type() in self._by_type:
                    raise ConfigError(f"a handler for {model.event_type()} is already registered")
                self._by_type[model.event_type()] = (model, fn)
            return fn

        if not models:
            raise ConfigError("on() needs at least one event model")
        return register

    def lookup(self, event_type: str) -> tuple[type[Event], Handler] | None:
        return self._by_type.get(event_type)

    @property
    def topics(self) -> list[str]:
        """The topics of every handled event type, sorted."""
        return sorted({model.topic for model, _ in self._by_type.values()})

    @property
    def event_types(self) -> list[str]:
        return sorted(self._by_type)
