"""Bearer tokens: stored as SHA-256 digests, each with the event types it may publish.

Tokens are long random strings (``new_token``), so a fast digest is the right hash: there is
nothing to brute-force, unlike a password, and every request can afford the check.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from limits import RateLimitItem, parse

from evstream.producers.gateway.settings import TokenSpec
from evstream.producers.gateway.tokens import hash_token, new_token

__all__ = ["Principal", "TokenStore", "hash_token", "new_token"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    name: str
    event_types: frozenset[str]
    rate: RateLimitItem

    def may_publish(self, event_type: str) -> bool:
        return "*" in self.event_types or event_type in self.event_types


class TokenStore:
    """Looks up the caller of a request by the digest of its bearer token."""

    def __init__(self, specs: Iterable[TokenSpec], default_rate: str) -> None:
        self._by_digest = {
            spec.sha256: Principal(
                spec.name, frozenset(spec.event_types), parse(spec.rate_limit or default_rate)
            )
            for spec in specs
        }

    def __len__(self) -> int:
        return len(self._by_digest)

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal for an ``Authorization: Bearer <token>`` header, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        # Lookup by digest: timing can only reveal digests, which do not help forge a token.
        return self._by_digest.get(hash_token(token.strip()))
