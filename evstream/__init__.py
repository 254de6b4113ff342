"""evstream core: settings, the exception tree, the local stack and topics as code."""

from importlib import metadata as _metadata

from evstream.errors import (
    ConfigError,
    DependencyResolutionError,
    EvstreamError,
    PartitionDecreaseError,
    PortInUseError,
    ReplicationChangeError,
    StackError,
    StackNotRunningError,
    StackStartError,
    StackTimeoutError,
    ToolNotFoundError,
    TopicsAdminError,
    TopicsError,
    TopicsFileError,
    UnknownConfigKeyError,
)
from evstream.settings import KafkaSettings, RegistrySettings, librdkafka_config

try:
    __version__ = _metadata.version("evstream")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "ConfigError",
    "DependencyResolutionError",
    "EvstreamError",
    "KafkaSettings",
    "PartitionDecreaseError",
    "PortInUseError",
    "RegistrySettings",
    "ReplicationChangeError",
    "StackError",
    "StackNotRunningError",
    "StackStartError",
    "StackTimeoutError",
    "ToolNotFoundError",
    "TopicsAdminError",
    "TopicsError",
    "TopicsFileError",
    "UnknownConfigKeyError",
    "__version__",
    "librdkafka_config",
]
