"""Where the CLI finds Kafka and the registry when the user did not say.

Order: an explicit option, then ``EVSTREAM_*`` variables, then the local stack running in
``EVSTREAM_STACK_DIR`` (so ``evstream stack up`` followed by any command just works), then the
settings defaults.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import SettingsError

from evstream.errors import ConfigError, StackError
from evstream.settings import KafkaSettings, RegistrySettings
from evstream.stack.manager import LocalStack
from evstream.stack.state import StackState

__all__ = ["kafka_settings", "load_settings", "registry_settings"]

S = TypeVar("S")


def load_settings(factory: Callable[[], S], prefix: str = "EVSTREAM_") -> S:
    """Build a settings model; turn pydantic's multi-line report into one :class:`ConfigError` line."""
    try:
        return factory()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        where = f"{prefix}{field.upper()}" if field else "settings"
        raise ConfigError(f"invalid {where}: {first['msg']}") from exc
    except SettingsError as exc:  # e.g. EVSTREAM_KAFKA_EXTRA that is not JSON
        raise ConfigError(str(exc)) from exc


def _local_stack() -> StackState | None:
    try:
        return LocalStack().state()
    except StackError:
        return None


def kafka_settings(bootstrap_servers: str | None = None) -> KafkaSettings:
    """Kafka settings from ``bootstrap_servers``, the environment, or the running local stack."""
    if not bootstrap_servers and "EVSTREAM_BOOTSTRAP_SERVERS" not in os.environ:
        stack = _local_stack()
        bootstrap_servers = stack.bootstrap_servers if stack is not None else None
    if bootstrap_servers:
        servers = bootstrap_servers
        return load_settings(lambda: KafkaSettings(bootstrap_servers=servers))
    return load_settings(KafkaSettings)


def registry_settings(url: str | None = None) -> RegistrySettings:
    """Registry settings from ``url``, the environment, or the running local stack."""
    if not url and "EVSTREAM_REGISTRY_URL" not in os.environ:
        stack = _local_stack()
        url = stack.registry_url if stack is not None else None
    if url:
        given = url
        return load_settings(lambda: RegistrySettings(url=given), prefix="EVSTREAM_REGISTRY_")
    return load_settings(RegistrySettings, prefix="EVSTREAM_REGISTRY_")
