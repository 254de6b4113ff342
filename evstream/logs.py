"""Logging for evstream processes: text or JSON lines, with the handled event's ids on every record.

Inside a consumer handler every log record (evstream's and the handler's own) carries
``event_id``, ``correlation_id`` and ``trace_id`` of the event being handled, so logs of one
business flow can be joined across services.

librdkafka's own lines come through the ``evstream.librdkafka`` logger: :func:`configure_logging`
shows them at INFO and DEBUG only, so a command's one-line error stays one line at WARNING.
"""

from __future__ import annotations

import logging
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

from evstream.schemas.causation import current_cause
from evstream.settings import LIBRDKAFKA_LOGGER

__all__ = ["EventContextFilter", "LogFormat", "configure_logging"]

LogFormat = Literal["text", "json"]


class EventContextFilter(logging.Filter):
    """Adds ``event_id``, ``correlation_id`` and ``trace_id`` (empty outside a handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, "event_id"):  # given explicitly (``extra=``): keep
            return True
        cause = current_cause()
        record.event_id = cause.causation_id if cause else ""
        record.correlation_id = cause.correlation_id if cause else ""
        record.trace_id = cause.traceparent.split("-")[1] if cause else ""
        return True


def configure_logging(fmt: LogFormat = "text", level: int | str = logging.WARNING) -> None:
    """Configure the root logger once for a CLI process (replaces existing handlers)."""
    handler = logging.StreamHandler()
    handler.addFilter(EventContextFilter())
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}{event_id}{correlation_id}{trace_id}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(event_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # librdkafka reports every failed connect as an error; at WARNING and above its lines are noise.
    chatty = root.getEffectiveLevel() <= logging.INFO
    logging.getLogger(LIBRDKAFKA_LOGGER).setLevel(logging.NOTSET if chatty else logging.CRITICAL + 1)
