"""Causation context: events published while handling an event continue its story.

While a consumer handler runs, :func:`handling` records the event being handled. A publish in
that context (``EventProducer.publish`` without explicit values) then gets:

- ``correlation_id``: the handled event's correlation id, or its event id when it had none;
- ``causation_id``: the handled event's id;
- ``traceparent``: the handler's span (same W3C trace id as the handled event, new span id).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from schemas.events import Envelope

__all__ = ["Cause", "child_traceparent", "current_cause", "handling"]


@dataclass(frozen=True, slots=True)
class Cause:
    """What a publish made inside a handler inherits."""

    correlation_id: str
    causation_id: str
    traceparent: str


_CAUSE: ContextVar[Cause | None] = ContextVar("evstream_cause", default=None)


def child_traceparent(parent: str | None) -> str:
    """A W3C traceparent for a new span: ``parent``'s trace id (a new trace when None), new span id."""
    if parent:
        _version, trace_id, _span, flags = parent.split("-")
        return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def current_cause() -> Cause | None:
    """The cause in effect (None outside a handler)."""
    return _CAUSE.get()


@contextmanager
def handling(envelope: Envelope, traceparent: str | None = None) -> Iterator[Cause]:
    """Make ``envelope`` the cause of everything published in this block.

    ``traceparent`` is the handler's own span if a tracer made one; otherwise a child span of
    the envelope's traceparent is made up here.
    """
    event_id = str(envelope.event_id)
    cause = Cause(
        correlation_id=envelope.correlation_id or event_id,
        causation_id=event_id,
        traceparent=traceparent or child_traceparent(envelope.traceparent),
    )
    token = _CAUSE.set(cause)
    try:
        yield cause
    finally:
        _CAUSE.reset(token)
