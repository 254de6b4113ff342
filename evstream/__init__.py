"""evstream: schema-checked Kafka events for Python.

The front door: ``from evstream import Event, Catalog, EventProducer, Handlers, ConsumerRunner,
KafkaSettings, ...``. The exception tree loads with the package; everything else loads on first
use (PEP 562), so ``import evstream`` (and ``evstream --help``) stays light: no confluent-kafka,
no pydantic models until a name that needs them is touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from evstream.errors import (
    ClusterUnavailableError,
    ConfigError,
    CorruptPayloadError,
    DeadLetter,
    DecodeError,
    DeliveryFailedError,
    DeliveryIndeterminateError,
    DependencyResolutionError,
    EncodeError,
    EnvelopeError,
    EventValidationError,
    EvstreamError,
    EvstreamSignal,
    GatewayRequestError,
    GroupActiveError,
    IncompatibleSchemaError,
    MissingExtraError,
    MissingTopicsError,
    PartitionDecreaseError,
    PortInUseError,
    ProducerFatalError,
    PublishError,
    RegistryError,
    RegistryUnavailableError,
    ReplayError,
    ReplayInputError,
    ReplicationChangeError,
    RequestError,
    RequestTimeoutError,
    SchemaError,
    SchemaHistoryError,
    SchemaMismatchError,
    SerdeError,
    StackError,
    StackNotRunningError,
    StackStartError,
    StackTimeoutError,
    StalePlanError,
    ToolNotFoundError,
    TopicsAdminError,
    TopicsError,
    TopicsFileError,
    UnknownConfigKeyError,
    UnknownEventTypeError,
    UnknownMagicByteError,
    UnknownSchemaIdError,
)

if TYPE_CHECKING:
    from evstream.consumers import (
        ConsumerRunner,
        ConsumerSettings,
        Handlers,
        InMemoryDedupeStore,
        MessageContext,
        Requester,
        RunStats,
        SQLiteDedupeStore,
        reply_with,
    )
    from evstream.consumers.replay import BoundedReplay, apply_plan, plan_replay
    from evstream.producers import (
        AsyncEventProducer,
        Delivery,
        DeliveryFuture,
        EventProducer,
        ProducerSettings,
    )
    from evstream.schemas import (
        Catalog,
        Compatibility,
        Envelope,
        Event,
        EventReader,
        Record,
        SchemaHistory,
        SubjectStrategy,
        load_catalog,
    )
    from evstream.settings import (
        KafkaSettings,
        ProjectSettings,
        RegistrySettings,
        librdkafka_config,
        project_catalog,
    )

    __version__: str

# name -> the module it lives in, imported on first access
_LAZY = {
    "KafkaSettings": "evstream.settings",
    "ProjectSettings": "evstream.settings",
    "RegistrySettings": "evstream.settings",
    "librdkafka_config": "evstream.settings",
    "project_catalog": "evstream.settings",
    "Catalog": "evstream.schemas",
    "Envelope": "evstream.schemas",
    "Event": "evstream.schemas",
    "SchemaHistory": "evstream.schemas",
    "load_catalog": "evstream.schemas",
    "AsyncEventProducer": "evstream.producers",
    "Delivery": "evstream.producers",
    "DeliveryFuture": "evstream.producers",
    "EventProducer": "evstream.producers",
    "ProducerSettings": "evstream.producers",
    "ConsumerRunner": "evstream.consumers",
    "ConsumerSettings": "evstream.consumers",
    "Handlers": "evstream.consumers",
    "MessageContext": "evstream.consumers",
    "RunStats": "evstream.consumers",
    "Record": "evstream.schemas",
    "EventReader": "evstream.schemas",
    "SubjectStrategy": "evstream.schemas",
    "Compatibility": "evstream.schemas",
    "SQLiteDedupeStore": "evstream.consumers",
    "InMemoryDedupeStore": "evstream.consumers",
    "Requester": "evstream.consumers",
    "reply_with": "evstream.consumers",
    "BoundedReplay": "evstream.consumers.replay",
    "plan_replay": "evstream.consumers.replay",
    "apply_plan": "evstream.consumers.replay",
}

__all__ = [
    "AsyncEventProducer",
    "BoundedReplay",
    "Catalog",
    "ClusterUnavailableError",
    "Compatibility",
    "ConfigError",
    "ConsumerRunner",
    "ConsumerSettings",
    "CorruptPayloadError",
    "DeadLetter",
    "DecodeError",
    "Delivery",
    "DeliveryFailedError",
    "DeliveryFuture",
    "DeliveryIndeterminateError",
    "DependencyResolutionError",
    "EncodeError",
    "Envelope",
    "EnvelopeError",
    "Event",
    "EventProducer",
    "EventReader",
    "EventValidationError",
    "EvstreamError",
    "EvstreamSignal",
    "GatewayRequestError",
    "GroupActiveError",
    "Handlers",
    "InMemoryDedupeStore",
    "IncompatibleSchemaError",
    "KafkaSettings",
    "MessageContext",
    "MissingExtraError",
    "MissingTopicsError",
    "PartitionDecreaseError",
    "PortInUseError",
    "ProducerFatalError",
    "ProducerSettings",
    "ProjectSettings",
    "PublishError",
    "Record",
    "RegistryError",
    "RegistrySettings",
    "RegistryUnavailableError",
    "ReplayError",
    "ReplayInputError",
    "ReplicationChangeError",
    "RequestError",
    "RequestTimeoutError",
    "Requester",
    "RunStats",
    "SQLiteDedupeStore",
    "SchemaError",
    "SchemaHistory",
    "SchemaHistoryError",
    "SchemaMismatchError",
    "SerdeError",
    "StackError",
    "StackNotRunningError",
    "StackStartError",
    "StackTimeoutError",
    "StalePlanError",
    "SubjectStrategy",
    "ToolNotFoundError",
    "TopicsAdminError",
    "TopicsError",
    "TopicsFileError",
    "UnknownConfigKeyError",
    "UnknownEventTypeError",
    "UnknownMagicByteError",
    "UnknownSchemaIdError",
    "__version__",
    "apply_plan",
    "librdkafka_config",
    "load_catalog",
    "plan_replay",
    "project_catalog",
    "reply_with",
]


def _version() -> str:
    from importlib import metadata  # noqa: PLC0415 - looked up only when asked

    try:
        return metadata.version("evstream")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> object:
    if name == "__version__":
        value: object = _version()
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'evstream' has no attribute {name!r}")
    globals()[name] = value  # once loaded, a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
