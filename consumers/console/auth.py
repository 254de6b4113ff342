"""Who is asking: signed session cookies from a token login, bearer tokens, CSRF tokens, audit.

Reading needs no token. A mutating request (redrive, replay apply) needs a principal with the
``admin`` permission: from the session cookie set by ``POST /login`` (the token is checked
against the configured SHA-256 digests and never stored) or an ``Authorization: Bearer`` header.
Every form carries a CSRF token that must equal the ``evs_csrf`` cookie (double submit) and, for
a logged-in session, the one bound into the signed session. Signatures use a per-process key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from evstream.consumers.console.settings import ConsoleToken, hash_token

__all__ = ["AuditLog", "Principal", "Signer", "TokenCheck"]

audit_logger = logging.getLogger("evstream.console.audit")


@dataclass(frozen=True)
class Principal:
    name: str
    permissions: frozenset[str]

    @property
    def admin(self) -> bool:
        return "admin" in self.permissions


class TokenCheck:
    """Looks a token up by its digest."""

    def __init__(self, tokens: Iterable[ConsoleToken]) -> None:
        self._by_digest = {t.sha256: Principal(t.name, frozenset(t.permissions)) for t in tokens}

    def __len__(self) -> int:
        return len(self._by_digest)

    def principal(self, token: str | None) -> Principal | None:
        if not token or not token.strip():
            return None
        return self._by_digest.get(hash_token(token.strip()))

    def bearer(self, authorization: str | None) -> Principal | None:
        scheme, _, token = (authorization or "").partition(" ")
        return self.principal(token) if scheme.lower() == "bearer" else None


class Signer:
    """HMAC-SHA256 signatures of small JSON payloads (sessions, plans, dry-run confirmations)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def verify(self, text: str, mac: str) -> bool:
        return hmac.compare_digest(self.mac(text), mac or "")

    def dumps(self, payload: dict[str, Any]) -> str:
        body = base64.urlsafe_b64encode(json.dumps(payload, sort_keys=True).encode()).decode()
        return f"{body}.{self.mac(body)}"

    def loads(self, value: str | None) -> dict[str, Any] | None:
        body, _, mac = (value or "").partition(".")
        if not body or not self.verify(body, mac):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(body))
        except ValueError:
            return None
        return payload if isinstance(payload, dict) else None

    def session(self, principal: Principal, csrf: str, hours: float) -> str:
        return self.dumps(
            {
                "name": principal.name,
                "perms": sorted(principal.permissions),
                "csrf": csrf,
                "exp": int(time.time() + hours * 3600),
            }
        )

    def principal(self, cookie: str | None) -> tuple[Principal, str] | None:
        """The session's principal and its CSRF token, if the cookie is valid and not expired."""
        data = self.loads(cookie)
        if data is None or int(data.get("exp", 0)) < time.time():
            return None
        return Principal(str(data["name"]), frozenset(data.get("perms", []))), str(data.get("csrf", ""))


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


class AuditLog:
    """Every action with who did it: logged (``evstream.console.audit``) and kept (last 200)."""

    def __init__(self) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=200)

    def record(self, who: str, action: str, outcome: str, **details: Any) -> None:
        """One entry; ``action`` is kept lowercase ("dlq redrive", "replay apply", "login")."""
        entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "who": who}
        entry |= {"action": action.lower(), "outcome": outcome, **details}
        self.entries.appendleft(entry)
        audit_logger.info("%s", json.dumps(entry, default=str, sort_keys=True))
