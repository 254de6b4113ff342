"""Trace context for handlers: continue the W3C trace of the handled event.

Without OpenTelemetry, the handler's span id is made up (same trace id as the event's
``traceparent``) so events published by the handler join the trace. With the ``otel`` extra
installed and an SDK tracer provider configured, a real CONSUMER span is started as a child of
the event's traceparent, and that span's context is what published events carry.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from schemas.causation import Cause, handling
from schemas.events import Envelope

__all__ = ["handler_span"]

try:
    from opentelemetry import propagate, trace
except ImportError:  # the otel extra is optional
    _tracer: Any = None
else:
    _tracer = trace.get_tracer("evstream.consumers")


@contextmanager
def handler_span(envelope: Envelope, topic: str, group_id: str) -> Iterator[Cause]:
    """The block a handler runs in: its cause (for publishes) and, when configured, its OTel span."""
    if _tracer is None:
        with handling(envelope) as cause:
            yield cause
        return
    carrier = {"traceparent": envelope.traceparent} if envelope.traceparent else {}
    with _tracer.start_as_current_span(
        f"{topic} process",
        context=propagate.extract(carrier),
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "messaging.consumer.group.name": group_id,
            "messaging.message.id": str(envelope.event_id),
        },
    ) as span:
        own = None
        if span.is_recording():  # a non-recording span would only echo its parent's ids
            ctx = span.get_span_context()
            own = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
        with handling(envelope, own) as cause:
            yield cause
