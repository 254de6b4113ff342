"""The HTTP publishing gateway: ``evstream gateway`` (FastAPI + uvicorn) in front of EventProducer.

Names load on first use (PEP 562): ``evstream gateway --help`` and ``evstream gateway token``
import this package without the ``gateway`` extra (fastapi, starlette, uvicorn, limits).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evstream.producers.gateway.app import BatchPublished, FastPath, Published, create_app
    from evstream.producers.gateway.auth import Principal, TokenStore
    from evstream.producers.gateway.idempotency import IdempotencyStore, event_id_for
    from evstream.producers.gateway.publisher import Publisher
    from evstream.producers.gateway.settings import GatewaySettings, TokenSpec
    from evstream.producers.gateway.tokens import hash_token, new_token

__all__ = [
    "BatchPublished",
    "FastPath",
    "GatewaySettings",
    "IdempotencyStore",
    "Principal",
    "Published",
    "Publisher",
    "TokenSpec",
    "TokenStore",
    "create_app",
    "event_id_for",
    "hash_token",
    "new_token",
]

_WHERE = {
    "BatchPublished": "evstream.producers.gateway.app",
    "FastPath": "evstream.producers.gateway.app",
    "GatewaySettings": "evstream.producers.gateway.settings",
    "IdempotencyStore": "evstream.producers.gateway.idempotency",
    "Principal": "evstream.producers.gateway.auth",
    "Published": "evstream.producers.gateway.app",
    "Publisher": "evstream.producers.gateway.publisher",
    "TokenSpec": "evstream.producers.gateway.settings",
    "TokenStore": "evstream.producers.gateway.auth",
    "create_app": "evstream.producers.gateway.app",
    "event_id_for": "evstream.producers.gateway.idempotency",
    "hash_token": "evstream.producers.gateway.tokens",
    "new_token": "evstream.producers.gateway.tokens",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value  # once loaded, a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
