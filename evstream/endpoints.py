"""Where the CLI finds Kafka and the registry when the user did not say.

Order: an explicit option, then ``EVSTREAM_*`` variables, then the local stack running in
``EVSTREAM_STACK_DIR`` (so ``evstream stack up`` followed by any command just works), then the
settings defaults.
"""

from __future__ import annotations

import os

from evstream.errors import StackError
from evstream.settings import KafkaSettings, RegistrySettings
from evstream.stack.manager import LocalStack
from evstream.stack.state import StackState

__all__ = ["kafka_settings", "registry_settings"]


def _local_stack() -> StackState | None:
    try:
        return LocalStack().state()
    except StackError:
        return None


def kafka_settings(bootstrap_servers: str | None = None) -> KafkaSettings:
    """Kafka settings from ``bootstrap_servers``, the environment, or the running local stack."""
    if bootstrap_servers:
        return KafkaSettings(bootstrap_servers=bootstrap_servers)
    if "EVSTREAM_BOOTSTRAP_SERVERS" not in os.environ:
        stack = _local_stack()
        if stack is not None:
            return KafkaSettings(bootstrap_servers=stack.bootstrap_servers)
    return KafkaSettings()


def registry_settings(url: str | None = None) -> RegistrySettings:
    """Registry settings from ``url``, the environment, or the running local stack."""
    if url:
        return RegistrySettings(url=url)
    if "EVSTREAM_REGISTRY_URL" not in os.environ:
        stack = _local_stack()
        if stack is not None and stack.registry_url is not None:
            return RegistrySettings(url=stack.registry_url)
    return RegistrySettings()
