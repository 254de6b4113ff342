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
from evstream.consumers.routing import RetryTopics, add_failure_topics, failure_topic_specs
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
    "add_failure_topics",
    "describe_group",
    "failure_topic_specs",
    "list_groups",
    "reply_with",
]
