"""Testing seams for evstream users.

- :class:`HandlerHarness`: run a ``Handlers`` set through the real dispatcher on in-memory
  records (no Kafka; milliseconds per test);
- :class:`StreamHarness`: run a stream ``App``'s handlers, tables, windows, waits and publishes
  through the engine's processor on in-memory records;
- the pytest plugin (:mod:`evstream.testing.plugin`, installed with evstream): the
  ``evstream_stack`` fixture gives a test session a real broker + schema registry.

The harness is imported on first use, so that the plugin, loaded by every pytest run, stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from evstream.testing.plugin import StackEndpoints

if TYPE_CHECKING:
    from evstream.testing.harness import (
        HandlerHarness,
        InMemorySchemaStore,
        Outcome,
        OutcomeKind,
        RoutedRecord,
    )
    from evstream.testing.streams import StreamHarness

__all__ = [
    "HandlerHarness",
    "InMemorySchemaStore",
    "Outcome",
    "OutcomeKind",
    "RoutedRecord",
    "StackEndpoints",
    "StreamHarness",
]

_HARNESS = {"HandlerHarness", "InMemorySchemaStore", "Outcome", "OutcomeKind", "RoutedRecord"}


def __getattr__(name: str) -> Any:
    if name in _HARNESS:
        return getattr(importlib.import_module("evstream.testing.harness"), name)
    if name == "StreamHarness":
        return getattr(importlib.import_module("evstream.testing.streams"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
