"""Consumer groups: typed handlers, at-least-once runner, retries, dead letters, dedupe."""

from consumers.dedupe import DedupeStore, InMemoryDedupeStore, SQLiteDedupeStore
from consumers.groups import GroupDescription, GroupListing, PartitionLag, describe_group, list_groups
from consumers.handlers import Handler, Handlers, MessageContext
from consumers.runner import ConsumerRunner, RunStats
from consumers.settings import ConsumerSettings

__all__ = [
    "ConsumerRunner",
    "ConsumerSettings",
    "DedupeStore",
    "GroupDescription",
    "GroupListing",
    "Handler",
    "Handlers",
    "InMemoryDedupeStore",
    "MessageContext",
    "PartitionLag",
    "RunStats",
    "SQLiteDedupeStore",
    "describe_group",
    "list_groups",
]
