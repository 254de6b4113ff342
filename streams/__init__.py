"""Stream processing on faust-streaming: an app, typed event topics, tables, windows, joins.

    from evstream.streams import App, Received

See :mod:`evstream.streams.app` for the guarantees (exactly-once effect on state by source
offsets, at-least-once derived events with deterministic ids). The names load on first use
(faust is the ``streams`` extra; ``evstream.streams.settings`` and friends need none of it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evstream.streams.app import (
        App,
        Change,
        CopartitioningError,
        EventTopic,
        Received,
        SkipEvent,
        Table,
        Wait,
        WaitForRow,
        Window,
        WindowedTable,
        current_received,
    )

__all__ = [
    "App",
    "Change",
    "CopartitioningError",
    "EventTopic",
    "Received",
    "SkipEvent",
    "Table",
    "Wait",
    "WaitForRow",
    "Window",
    "WindowedTable",
    "current_received",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("evstream.streams.app"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
