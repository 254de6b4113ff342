"""Consumer groups: typed handlers, at-least-once runner, retries, dead letters, dedupe."""

from consumers.dedupe import DedupeStore, InMemoryDedupeStore, SQLiteDedupeStore
from consumers.handlers import Handler, Handlers, MessageContext
from consumers.runner import ConsumerRunner, RunStats
from consumers.settings import ConsumerSettings

__all__ = [
    "ConsumerRunner",
    "ConsumerSettings",
    "DedupeStore",
    "Handler",
    "Handlers",
    "InMemoryDedupeStore",
    "MessageContext",
    "RunStats",
    "SQLiteDedupeStore",
]
