"""Gateway settings: where it listens, who may publish what, limits. Env ``EVSTREAM_GATEWAY_<FIELD>``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from limits import parse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from evstream.errors import ConfigError
from evstream.settings import NO_CATALOG, ProjectSettings

__all__ = ["GatewaySettings", "TokenSpec"]


def _rate(value: str) -> str:
    try:
        parse(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a rate like '100/second' or '5000/minute'") from exc
    return value


def _project_catalog() -> str:
    catalog = ProjectSettings().catalog
    if catalog is None:
        raise ConfigError(NO_CATALOG)
    return catalog


class TokenSpec(BaseModel):
    """One API token: its SHA-256 (never the token itself) and what it may publish."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(
        min_length=1, description="Who holds the token; the events' ce_source is gateway/<name>."
    )
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the token (`evstream gateway token`)."
    )
    event_types: list[str] = Field(min_length=1, description="Event types it may publish; '*' for all.")
    rate_limit: str | None = Field(
        default=None, description="Overrides the gateway's default rate for this token."
    )

    _check_rate = field_validator("rate_limit")(lambda v: None if v is None else _rate(v))


class GatewaySettings(BaseSettings):
    """How ``evstream gateway`` serves. Every field reads ``EVSTREAM_GATEWAY_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="EVSTREAM_GATEWAY_", frozen=True, extra="ignore")

    host: str = Field(default="127.0.0.1", description="Interface to bind; default 127.0.0.1.")
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port; default 8080.")
    tokens: list[TokenSpec] = Field(
        default_factory=list, description="API tokens as JSON (see TokenSpec); added to tokens_file's."
    )
    tokens_file: Path | None = Field(
        default=None,
        description="YAML or JSON file with `tokens: [{name, sha256, event_types, rate_limit}]`.",
    )
    rate_limit: str = Field(
        default="2000/second", description="Requests per token (limits syntax); a batch counts as one."
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Larger bodies get 413; default 1 MiB."
    )
    max_batch_events: int = Field(default=500, ge=1, le=100_000, description="Events per batch request.")
    max_json_values: int = Field(
        default=4096,
        ge=64,
        le=1_000_000,
        description="JSON values (objects, arrays, scalars) per event; more gets 413. Bounds the "
        "validation work of a request, which grows with its values, not its bytes; default 4096.",
    )
    max_batch_values: int = Field(
        default=65_536,
        ge=64,
        le=10_000_000,
        description="JSON values per batch request (all its events); more gets 413; default 65536.",
    )
    max_errors: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="Field errors listed in a 422 (their count is given); default 20.",
    )
    max_header_bytes: int = Field(
        default=16_384,
        ge=1024,
        le=1_048_576,
        description="Request line plus headers; more gets 431 and the connection closed; default 16 KiB.",
    )
    max_headers: int = Field(
        default=100, ge=8, le=10_000, description="Header fields per request; more gets 431; default 100."
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="A request's line and headers must arrive within this, from the connection (or "
        "the end of the previous response); else 408 and close; default 10 s.",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="A request's body must arrive within this, from its headers; else 408 and close; "
        "default 30 s.",
    )
    idle_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="An open connection with no request in progress is closed after this; default 5 s.",
    )
    delivery_timeout_ms: int = Field(
        default=5_000,
        ge=1_000,
        le=300_000,
        description="How long a request waits for Kafka's acknowledgement before answering 503.",
    )
    linger_ms: int = Field(default=2, ge=0, le=100, description="Producer batching delay; default 2 ms.")
    idempotency_ttl_s: float = Field(default=86_400, gt=0, description="How long an Idempotency-Key is kept.")
    idempotency_max_keys: int = Field(default=200_000, ge=1, description="Oldest keys are dropped past this.")
    topics: dict[str, str] = Field(
        default_factory=dict,
        description="Event type -> topic overrides (JSON); default the catalog's topics.",
    )
    catalog: str = Field(
        default_factory=_project_catalog,
        description="The event catalog, module:attribute. Env EVSTREAM_GATEWAY_CATALOG; default the "
        "project's (EVSTREAM_CATALOG or [tool.evstream] catalog), else a ConfigError.",
    )
    transactional_id_prefix: str = Field(
        default="evstream-gateway",
        description="Atomic batches use <prefix>-<host>-<pid> as transactional.id.",
    )
    readiness_timeout_s: float = Field(default=2.0, gt=0, le=30, description="Broker check for /readyz.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info")

    _check_rate = field_validator("rate_limit")(_rate)

    @model_validator(mode="after")
    def _unique_names(self) -> GatewaySettings:
        names = [t.name for t in self.tokens]
        if len(names) != len(set(names)):
            raise ValueError("token names must be unique")
        return self

    def all_tokens(self) -> list[TokenSpec]:
        """``tokens`` plus those in ``tokens_file``; :class:`ConfigError` if the file is unusable."""
        found = list(self.tokens)
        if self.tokens_file is not None:
            try:
                data = yaml.safe_load(self.tokens_file.read_text(encoding="utf-8")) or {}
                found += [TokenSpec.model_validate(t) for t in data.get("tokens", [])]
            except (OSError, yaml.YAMLError, AttributeError, ValueError) as exc:
                raise ConfigError(f"tokens file {self.tokens_file}: {exc}".splitlines()[0]) from exc
        for field in ("name", "sha256"):
            values = [getattr(t, field) for t in found]
            if len(values) != len(set(values)):
                raise ConfigError(f"token {field}s must be unique (tokens and tokens_file together)")
        return found
