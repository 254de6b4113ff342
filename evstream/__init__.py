"""evstream core: settings, the exception tree, the local stack and topics as code."""

from importlib import metadata as _metadata

from evstream.errors import (
    ConfigError,
    CorruptPayloadError,
    DecodeError,
    DependencyResolutionError,
    EncodeError,
    EvstreamError,
    PartitionDecreaseError,
    PortInUseError,
    RegistryError,
    ReplicationChangeError,
    SerdeError,
    StackError,
    StackNotRunningError,
    StackStartError,
    StackTimeoutError,
    ToolNotFoundError,
    TopicsAdminError,
    TopicsError,
    TopicsFileError,
    UnknownConfigKeyError,
    UnknownMagicByteError,
    UnknownSchemaIdError,
)
from evstream.settings import KafkaSettings, RegistrySettings, librdkafka_config

try:
    __version__ = _metadata.version("evstream")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "ConfigError",
    "CorruptPayloadError",
    "DecodeError",
    "DependencyResolutionError",
    "EncodeError",
    "EvstreamError",
    "KafkaSettings",
    "PartitionDecreaseError",
    "PortInUseError",
    "RegistryError",
    "RegistrySettings",
    "ReplicationChangeError",
    "SerdeError",
    "StackError",
    "StackNotRunningError",
    "StackStartError",
    "StackTimeoutError",
    "ToolNotFoundError",
    "TopicsAdminError",
    "TopicsError",
    "TopicsFileError",
    "UnknownConfigKeyError",
    "UnknownMagicByteError",
    "UnknownSchemaIdError",
    "__version__",
    "librdkafka_config",
]
