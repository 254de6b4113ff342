"""Consumer groups: typed handlers, at-least-once runner, retries, retry topics, dead letters,
dedupe, request-reply."""

from evstream.consumers.dedupe import DedupeStore, InMemoryDedupeStore, SQLiteDedupeStore
from evstream.consumers.groups import (
    GroupDescription,
    GroupListing,
    PartitionLag,
    describe_group,
    list_groups,
)
from evstream.consumers.handlers import Handler, Handlers, HandlerSpec, MessageContext
from evstream.consumers.reply import Requester, reply_with
from evstream.consumers.routing import RetryTopics
from evstream.consumers.runner import ConsumerRunner, RunStats
from evstream.consumers.settings import ConsumerSettings

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
