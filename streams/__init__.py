"""Stream processing on evstream's own engine: an app, typed event topics, tables, windows, joins.

    from evstream.streams import App, Received

See :mod:`evstream.streams.app` for the guarantees (``at_least_once`` with exactly-once effect on
state by source offsets; ``exactly_once`` through Kafka transactions). The layout follows the
engine: :mod:`~evstream.streams.app` (the API), :mod:`~evstream.streams.context` (the message
being handled), :mod:`~evstream.streams.state` (records, stores, tables),
:mod:`~evstream.streams.windows`, :mod:`~evstream.streams.joins`, and
:mod:`~evstream.streams.engine` (the processor, the Kafka loop, commits, recovery).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evstream.errors import CopartitioningError, SkipEvent, WaitForRow
    from evstream.streams.app import App
    from evstream.streams.context import Received, current_received
    from evstream.streams.joins import Wait
    from evstream.streams.state.tables import Change, Table
    from evstream.streams.topics import EventTopic
    from evstream.streams.windows import SessionTable, Window, WindowedTable

__all__ = [
    "App",
    "Change",
    "CopartitioningError",
    "EventTopic",
    "Received",
    "SessionTable",
    "SkipEvent",
    "Table",
    "Wait",
    "WaitForRow",
    "Window",
    "WindowedTable",
    "current_received",
]

_WHERE = {
    "App": "evstream.streams.app",
    "Change": "evstream.streams.state.tables",
    "CopartitioningError": "evstream.errors",
    "EventTopic": "evstream.streams.topics",
    "Received": "evstream.streams.context",
    "SessionTable": "evstream.streams.windows",
    "SkipEvent": "evstream.errors",
    "Table": "evstream.streams.state.tables",
    "Wait": "evstream.streams.joins",
    "WaitForRow": "evstream.errors",
    "Window": "evstream.streams.windows",
    "WindowedTable": "evstream.streams.windows",
    "current_received": "evstream.streams.context",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is not None:
        return getattr(importlib.import_module(where), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
