"""The web console (``evstream console``, the ``console`` extra): look at topics, events, groups,
schemas and dead letters; redrive and replay with an admin token."""

from evstream.consumers.console.auth import AuditLog, Principal, Signer, TokenCheck
from evstream.consumers.console.backend import Backend, BrowseQuery, BrowseResult, LagSampler, RecordView
from evstream.consumers.console.settings import ConsoleSettings, ConsoleToken, hash_token, new_token

__all__ = [
    "AuditLog",
    "Backend",
    "BrowseQuery",
    "BrowseResult",
    "ConsoleSettings",
    "ConsoleToken",
    "LagSampler",
    "Principal",
    "RecordView",
    "Signer",
    "TokenCheck",
    "hash_token",
    "new_token",
]
