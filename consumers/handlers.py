"""Typed handler registration: a handler gets the decoded event and the record's context."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from confluent_kafka import Message

from evstream.errors import ConfigError
from evstream.schemas.events import Envelope, Event

__all__ = ["Handler", "HandlerSpec", "Handlers", "MessageContext"]

E = TypeVar("E", bound=Event)


class MessageContext:
    """Where an event came from, its envelope and the attempt. Read-only; fields are computed
    from the record on first access (a handler that reads none of them pays nothing)."""

    __slots__ = ("_msg", "attempt", "envelope", "retry_tier")

    def __init__(self, msg: Message, envelope: Envelope, attempt: int = 1, retry_tier: int = 0) -> None:
        self._msg = msg
        self.envelope = envelope
        self.attempt = attempt  # counts every attempt so far, in place and through retry topics
        self.retry_tier = retry_tier  # 0: read from the source topic; n: read back from retry tier n

    @property
    def topic(self) -> str:
        return self._msg.topic() or ""

    @property
    def partition(self) -> int:
        return self._msg.partition() or 0

    @property
    def offset(self) -> int:
        return self._msg.offset() or 0

    @property
    def source(self) -> tuple[str, int, int]:
        """``(topic, partition, offset)`` of the original record, also when this one was read
        back from a retry topic: the stable position for idempotent handlers."""
        if self.retry_tier == 0:
            return self.topic, self.partition, self.offset
        from evstream.consumers.failures import Origin  # noqa: PLC0415 - only for retried records

        origin = Origin.of(self._msg)
        return origin.topic, origin.partition, origin.offset

    @property
    def timestamp(self) -> datetime | None:
        """The record's timestamp (UTC), or None when it has none."""
        ts_type, ts = self._msg.timestamp()
        return datetime.fromtimestamp(ts / 1000, UTC) if ts_type else None

    @property
    def key(self) -> bytes | None:
        key = self._msg.key()
        return key.encode() if isinstance(key, str) else key

    @property
    def headers(self) -> tuple[tuple[str, bytes], ...]:
        raw = self._msg.headers() or []
        pairs = raw.items() if isinstance(raw, dict) else raw
        return tuple((k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in pairs)

    def __repr__(self) -> str:
        return (
            f"MessageContext({self.topic}[{self.partition}]@{self.offset}, "
            f"{self.envelope.event_type} {self.envelope.event_id}, attempt={self.attempt})"
        )


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
