"""The HTTP publishing gateway: ``evstream gateway`` (FastAPI + uvicorn) in front of EventProducer."""

from evstream.producers.gateway.app import BatchPublished, FastPath, Published, create_app
from evstream.producers.gateway.auth import Principal, TokenStore, hash_token, new_token
from evstream.producers.gateway.idempotency import IdempotencyStore, event_id_for
from evstream.producers.gateway.publisher import Publisher
from evstream.producers.gateway.settings import GatewaySettings, TokenSpec

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
