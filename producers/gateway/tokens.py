"""Making and hashing gateway tokens: plain Python, so ``evstream gateway token`` works without
the ``gateway`` extra (where the server cannot be installed)."""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["hash_token", "new_token"]

_PREFIX = "evs_"


def new_token() -> str:
    """A fresh random token (256 bits), prefixed so scanners can spot leaked ones."""
    return _PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The hex SHA-256 to put in the gateway's token config."""
    return hashlib.sha256(token.encode()).hexdigest()
