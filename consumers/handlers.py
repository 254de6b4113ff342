"""Typed handler registration: a handler gets the decoded event and the record's context."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from evstream.errors import ConfigError
from schemas.events import Envelope, Event

__all__ = ["Handler", "HandlerSpec", "Handlers", "MessageContext"]

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
    attempt: int  # counts every attempt so far, in place and through retry topics
    retry_tier: int = 0  # 0: read from the source topic; n: read back from retry tier n


Handler = Callable[[Any, MessageContext], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A registered handler and how its failures are retried."""

    model: type[Event]
    handler: Handler
    ordered: bool = False  # block-and-retry (keeps per-partition order) instead of retry topics


class Handlers:
    """Event type -> handler. Use ``@handlers.on(OrderPlaced, OrderShipped)`` on a function taking
    ``(event, ctx)``; it may be ``async``. One handler per event type.

    ``ordered=True`` opts into block-and-retry: when in-place retries are exhausted the record's
    partition is paused and the record retried there (later records of the partition wait),
    instead of moving it to a retry topic and going on. Use it when per-key order matters more
    than throughput.
    """

    def __init__(self) -> None:
        self._by_type: dict[str, HandlerSpec] = {}

    def on(
        self, *models: type[E], ordered: bool = False
    ) -> Callable[[Callable[[E, MessageContext], Any]], Callable[[E, MessageContext], Any]]:
        def register(fn: Callable[[E, MessageContext], Any]) -> Callable[[E, MessageContext], Any]:
            for model in models:
                if model.event_type() in self._by_type:
                    raise ConfigError(f"a handler for {model.event_type()} is already registered")
                self._by_type[model.event_type()] = HandlerSpec(model, fn, ordered)
            return fn

        if not models:
            raise ConfigError("on() needs at least one event model")
        return register

    def lookup(self, event_type: str) -> HandlerSpec | None:
        return self._by_type.get(event_type)

    @property
    def topics(self) -> list[str]:
        """The topics of every handled event type, sorted."""
        return sorted({spec.model.topic for spec in self._by_type.values()})

    @property
    def event_types(self) -> list[str]:
        return sorted(self._by_type)
