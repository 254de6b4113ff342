"""Consumer groups: typed handlers, at-least-once runner, retries, retry topics, dead letters,
dedupe, request-reply."""

from consumers.dedupe import DedupeStore, InMemoryDedupeStore, SQLiteDedupeStore
from consumers.groups import GroupDescription, GroupListing, PartitionLag, describe_group, list_groups
from consumers.handlers import Handler, Handlers, HandlerSpec, MessageContext
from consumers.reply import Requester, reply_with
from consumers.routing import RetryTopics
from consumers.runner import ConsumerRunner, RunStats
from consumers.settings import ConsumerSettings

__all__ = [
    "ConsumerRunner",
    "ConsumerSettings",
    "DedupeStore",
    "GroupDescription",
    "GroupListing",
    "Handler",
    "HandlerSpec",
    "Handlers",
    "InMemoryDedupeStore",
    "MessageContext",
    "PartitionLag",
    "Requester",
    "RetryTopics",
    "RunStats",
    "SQLiteDedupeStore",
    "describe_group",
    "list_groups",
    "reply_with",
]
