"""Causation context: events published while handling an event continue its story.

While a consumer handler runs, the event being handled is the *cause* (:func:`set_cause`). A
publish in that context (``EventProducer.publish`` without explicit values) then gets:

- ``correlation_id``: the handled event's correlation id, or its event id when it had none;
- ``causation_id``: the handled event's id;
- ``traceparent``: the handler's span (same W3C trace id as the handled event, new span id).

Everything is computed on first use: handlers that publish nothing pay almost nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

from evstream.schemas.events import Envelope, EnvelopeHeaders

__all__ = ["Cause", "child_traceparent", "current_cause", "handling", "reset_cause", "set_cause"]


def child_traceparent(parent: str | None) -> str:
    """A W3C traceparent for a new span: ``parent``'s trace id (a new trace when None), new span id."""
    if parent:
        _version, trace_id, _span, flags = parent.split("-")
        return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


class Cause:
    """What a publish made inside a handler inherits from the handled event."""

    __slots__ = ("_envelope", "_span")

    def __init__(self, envelope: Envelope | EnvelopeHeaders, span_traceparent: str | None = None) -> None:
        self._envelope = envelope  # EnvelopeHeaders: the consume path's, parsed when first read
        self._span = span_traceparent

    @property
    def envelope(self) -> Envelope:
        envelope = self._envelope
        return envelope if isinstance(envelope, Envelope) else envelope.envelope

    @property
    def causation_id(self) -> str:
        return str(self.envelope.event_id)

    @property
    def correlation_id(self) -> str:
        return self.envelope.correlation_id or self.causation_id

    @property
    def traceparent(self) -> str:
        """The handler's span: given by a tracer, or made up once (a child of the event's)."""
        if self._span is None:
            self._span = child_traceparent(self.envelope.traceparent)
        return self._span


_CAUSE: ContextVar[Cause | None] = ContextVar("evstream_cause", default=None)


def current_cause() -> Cause | None:
    """The cause in effect (None outside a handler)."""
    return _CAUSE.get()


def set_cause(
    envelope: Envelope | EnvelopeHeaders, span_traceparent: str | None = None
) -> Token[Cause | None]:
    """Make ``envelope`` the cause until :func:`reset_cause` with the returned token."""
    return _CAUSE.set(Cause(envelope, span_traceparent))


def reset_cause(token: Token[Cause | None]) -> None:
    _CAUSE.reset(token)


@contextmanager
def handling(envelope: Envelope, span_traceparent: str | None = None) -> Iterator[Cause]:
    """Make ``envelope`` the cause of everything published in this block."""
    token = set_cause(envelope, span_traceparent)
    try:
        cause = _CAUSE.get()
        assert cause is not None
        yield cause
    finally:
        reset_cause(token)
