"""Typed handler registration: a handler gets the decoded event, and the record's context if it
asks for it (a second parameter)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from confluent_kafka import Message

from evstream.errors import ConfigError
from evstream.schemas.events import Envelope, EnvelopeHeaders, Event

__all__ = ["Handler", "HandlerSpec", "Handlers", "MessageContext"]

F = TypeVar("F", bound=Callable[..., Any])


class MessageContext:
    """Where an event came from, its envelope and the attempt. Read-only; fields are computed
    from the record on first access (a handler that reads none of them pays nothing)."""

    __slots__ = ("_envelope", "_msg", "attempt", "decoded_key", "retry_tier")

    def __init__(
        self,
        msg: Message,
        envelope: Envelope | EnvelopeHeaders,
        attempt: int = 1,
        retry_tier: int = 0,
        *,
        decoded_key: Any = None,
    ) -> None:
        self._msg = msg
        self._envelope = envelope  # derived from the record's position when it carried none
        self.attempt = attempt  # counts every attempt so far, in place and through retry topics
        self.retry_tier = retry_tier  # 0: read from the source topic; n: read back from retry tier n
        self.decoded_key = decoded_key  # a Confluent-framed Avro key, decoded (``key`` stays raw)

    @property
    def envelope(self) -> Envelope:
        """The record's envelope (parsed from its headers on first access)."""
        envelope = self._envelope
        if not isinstance(envelope, Envelope):
            envelope = self._envelope = envelope.envelope
        return envelope

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
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def takes_context(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is called as ``fn(event, ctx)`` (True) or ``fn(event)`` (False).

    Decided once, at registration; :class:`ConfigError` for any other shape (no parameter, a
    third required one, a required keyword-only one).
    """
    name = getattr(fn, "__qualname__", repr(fn))
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: the full form
        return True
    positional = [p for p in params if p.kind in _POSITIONAL]
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    varargs = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    keyword_only = [
        p.name
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
    ]
    if keyword_only:
        raise ConfigError(f"handler {name} has required keyword-only parameter(s): {', '.join(keyword_only)}")
    if len(required) > 2:
        raise ConfigError(f"handler {name} must take (event) or (event, ctx), not {len(required)} arguments")
    if not positional and not varargs:
        raise ConfigError(f"handler {name} must take (event) or (event, ctx), not no arguments")
    return varargs or len(positional) >= 2


def _without_context(fn: Callable[[Any], Awaitable[None] | None]) -> Handler:
    def call(event: Any, _ctx: MessageContext) -> Awaitable[None] | None:
        return fn(event)

    return call


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A registered handler and how its failures are retried.

    ``handler`` is always called as ``handler(event, ctx)``: a function registered with one
    parameter is adapted once, at registration; ``function`` is the function as registered.
    ``context`` is False when ``function`` takes the event alone: the dispatcher then calls it
    without building a :class:`MessageContext`.

    ``batch``: registered with :meth:`Handlers.on_batch`; ``function`` takes a list of events
    (and a list of contexts when ``batch_context``), and ``handler`` is the one-record form of it
    (``function([event])``) used for a record on its own (read back from a retry topic, or
    isolated after its batch failed).
    """

    model: type[Event]
    handler: Handler
    ordered: bool = False  # block-and-retry (keeps per-partition order) instead of retry topics
    function: Callable[..., Any] | None = None
    context: bool = True
    batch: bool = False
    batch_context: bool = False


class Handlers:
    """Event type -> handler. Use ``@handlers.on(OrderPlaced, OrderShipped)`` on a function taking
    ``(event)`` or ``(event, ctx)`` (a :class:`MessageContext`); it may be ``async``. One handler
    per event type.

    ``ordered=True`` opts into block-and-retry: when in-place retries are exhausted the record's
    partition is paused and the record retried there (later records of the partition wait),
    instead of moving it to a retry topic and going on. Use it when per-key order matters more
    than throughput.
    """

    def __init__(self) -> None:
        self._by_type: dict[str, HandlerSpec] = {}

    def on(self, *models: type[Event], ordered: bool = False) -> Callable[[F], F]:
        """Register the decorated function for ``models``; returns it unchanged."""

        def register(fn: F) -> F:
            context = takes_context(fn)
            handler: Handler = fn if context else _without_context(fn)
            for model in models:
                if model.event_type() in self._by_type:
                    raise ConfigError(f"a handler for {model.event_type()} is already registered")
            for model in models:
                self._by_type[model.event_type()] = HandlerSpec(model, handler, ordered, fn, context)
            return fn

        if not models:
            raise ConfigError("on() needs at least one event model")
        return register

    def on_batch(self, *models: type[Event]) -> Callable[[F], F]:
        """Register the decorated function for ``models``, called with a *list* of events.

        The function takes ``(events)`` or ``(events, contexts)`` (a list of
        :class:`MessageContext`, same order) and may be ``async``. The runner calls it once per
        fetched batch with that batch's records of these types (in partition order), and stores
        their offsets only after it returned. If it raises, the batch is split: each of its
        records is tried again on its own (``function([event])``) with the usual in-place retries,
        then retry topics or the dead-letter topic, so one bad record fails alone and the others
        are handled (a record of a failed batch may so be handled twice: make the handler
        idempotent, as at-least-once requires anyway). Events published from a batch handler
        have no cause (pass one with :func:`evstream.schemas.causation.handling`).
        """

        def register(fn: F) -> F:
            context = takes_context(fn)

            def one(event: Any, ctx: MessageContext) -> Awaitable[None] | None:
                result: Awaitable[None] | None = fn([event], [ctx]) if context else fn([event])
                return result

            for model in models:
                if model.event_type() in self._by_type:
                    raise ConfigError(f"a handler for {model.event_type()} is already registered")
            for model in models:
                self._by_type[model.event_type()] = HandlerSpec(
                    model, one, False, fn, True, batch=True, batch_context=context
                )
            return fn

        if not models:
            raise ConfigError("on_batch() needs at least one event model")
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
