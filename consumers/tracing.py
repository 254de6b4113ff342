"""Trace context for handlers: continue the W3C trace of the handled event.

Without OpenTelemetry (or with its API but no SDK tracer provider), the handler's span id is
made up when first needed, with the trace id of the event's ``traceparent``, so events the
handler publishes join the trace. With the ``otel`` extra installed and an SDK tracer provider
configured, a real CONSUMER span is started as a child of the event's traceparent, and that
span's context is what published events carry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from evstream.schemas.causation import reset_cause, set_cause
from evstream.schemas.events import Envelope

__all__ = ["run_in_span", "tracing_enabled"]

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider
except ImportError:  # the otel extra is optional
    trace = None  # type: ignore[assignment]


def tracing_enabled() -> bool:
    """True when an SDK tracer provider is installed (spans would be recorded). Not cheap: it
    reads the environment, so callers ask once (the runner does at start)."""
    return trace is not None and not isinstance(
        trace.get_tracer_provider(), ProxyTracerProvider | NoOpTracerProvider
    )


def run_in_span(
    envelope: Envelope, topic: str, group_id: str, call: Callable[[], Any], *, traced: bool
) -> Any:
    """Run ``call()`` with ``envelope`` as the cause, inside an OTel span when ``traced``."""
    if not traced:
        token = set_cause(envelope)
        try:
            return call()
        finally:
            reset_cause(token)
    carrier = {"traceparent": envelope.traceparent} if envelope.traceparent else {}
    tracer = trace.get_tracer("evstream.consumers")
    with tracer.start_as_current_span(
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
        token = set_cause(envelope, own)
        try:
            return call()
        finally:
            reset_cause(token)
