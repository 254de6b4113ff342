"""Settings of ``evstream console`` and its tokens (the gateway's kind: random, stored as SHA-256)."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from evstream.errors import ConfigError

__all__ = ["ConsoleSettings", "ConsoleToken", "hash_token", "new_token"]

Permission = Literal["read", "admin"]


def new_token() -> str:
    """A fresh random token (256 bits), ``evs_``-prefixed as the gateway's are."""
    return "evs_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The hex SHA-256 stored in the tokens config (the gateway's digest: one mechanism)."""
    return hashlib.sha256(token.encode()).hexdigest()


class ConsoleToken(BaseModel):
    """One operator token: who holds it, its SHA-256 (never the token), what it may do."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # gateway entries may carry event_types

    name: str = Field(min_length=1, description="Who holds the token; actions are logged under it.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the token.")
    permissions: list[Permission] = Field(
        default_factory=lambda: list[Permission](["read"]),
        description="'admin' may redrive dead letters and apply replays.",
    )


class ConsoleSettings(BaseSettings):
    """How ``evstream console`` serves. Every field reads ``EVSTREAM_CONSOLE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="EVSTREAM_CONSOLE_", frozen=True, extra="ignore")

    host: str = Field(default="127.0.0.1", description="Interface to bind; default loopback only.")
    port: int = Field(default=8090, ge=0, le=65535, description="TCP port; default 8090.")
    tokens: list[ConsoleToken] = Field(default_factory=list, description="Tokens as a JSON list.")
    tokens_file: Path | None = Field(default=None, description="YAML file: tokens: [{name, sha256, ...}].")
    topics_file: Path | None = Field(
        default=None, description="topics-as-code YAML for the plan diff (default ./deploy/topics.yaml)."
    )
    max_scan_records: int = Field(default=20_000, ge=100, description="Records one read may scan.")
    max_scan_seconds: float = Field(default=2.0, gt=0, description="Time one read may take.")
    sample_interval_s: float = Field(default=5.0, gt=0, description="Group lag sampling period.")
    session_hours: float = Field(default=8.0, gt=0, description="How long a login lasts.")

    def all_tokens(self) -> list[ConsoleToken]:
        """``tokens`` plus the entries of ``tokens_file``; :class:`ConfigError` for a bad file."""
        found = list(self.tokens)
        if self.tokens_file is not None:
            try:
                data = yaml.safe_load(self.tokens_file.read_text()) or {}
                found += [ConsoleToken.model_validate(t) for t in data.get("tokens", [])]
            except (OSError, yaml.YAMLError, ValidationError, AttributeError) as exc:
                raise ConfigError(
                    f"cannot read EVSTREAM_CONSOLE_TOKENS_FILE {self.tokens_file}: {exc}"
                ) from exc
        return found

    def resolved_topics_file(self) -> Path | None:
        if self.topics_file is not None:
            return self.topics_file
        default = Path("deploy/topics.yaml")
        return default if default.exists() else None


def token_entry(name: str, token: str, permissions: list[str]) -> str:
    """The tokens-file entry for ``token`` (JSON, also valid YAML)."""
    return json.dumps({"name": name, "sha256": hash_token(token), "permissions": permissions})
