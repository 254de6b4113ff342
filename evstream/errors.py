"""The one exception tree of evstream.

Every error evstream raises on purpose derives from :class:`EvstreamError`, so callers can
catch the whole family with one clause. Errors that are really bad input also inherit the
matching built-in (``ValueError``, ``LookupError``...) so generic code keeps working.

::

    EvstreamError
    ├── ConfigError (ValueError)              settings or passthrough keys are wrong
    │   ├── UnknownConfigKeyError             a librdkafka key that does not exist
    │   ├── MissingExtraError                 a feature's optional dependencies are not installed
    │   └── CopartitioningError               a stream and a table it joins have other partition counts
    ├── StackError                            the local Kafka/registry stack
    │   ├── ToolNotFoundError                 java or mvn missing, or too old
    │   ├── DependencyResolutionError         Maven could not resolve the pinned jars
    │   ├── PortInUseError                    a requested port is taken
    │   ├── StackStartError                   a process died while starting (log tail attached)
    │   ├── StackTimeoutError (TimeoutError)  not ready before the deadline
    │   └── StackNotRunningError              status/down with nothing started
    ├── TopicsError                           topics as code
    │   ├── TopicsFileError (ValueError)      the declaration file is malformed
    │   ├── PartitionDecreaseError            Kafka cannot remove partitions
    │   ├── ReplicationChangeError            RF changes are not done by `topics apply`
    │   ├── TopicsAdminError                  the cluster refused an operation
    │   └── MissingTopicsError (ValueError)   a consumer group's retry/dead-letter topics are not declared
    ├── SchemaError                           the schema catalog and its history
    │   ├── UnknownEventTypeError (LookupError, ValueError)  no model for that type name
    │   ├── EventValidationError (ValueError) an event fails its model (names the field)
    │   ├── SchemaHistoryError (ValueError)   a model differs from its committed history
    │   └── IncompatibleSchemaError (ValueError)  a change breaks the subject's mode
    ├── PublishError                          a publish did not succeed
    │   ├── DeliveryFailedError               the broker refused it: not written
    │   │   ├── ClusterUnavailableError       no broker reachable for too long: not queued, not written
    │   │   ├── TopicAuthorizationError (AuthorizationError)  no WRITE ACL on the topic: not written
    │   │   ├── PublishAuthenticationError (KafkaAuthenticationError)  the producer cannot log in
    │   │   └── PublishTlsError (KafkaTlsError)  the broker's certificate failed verification
    │   ├── DeliveryIndeterminateError        timed out in flight: possibly written
    │   └── ProducerFatalError                librdkafka's producer hit a fatal error (cause attached)
    ├── KafkaSecurityError                    the cluster refused who we are or what we asked
    │   ├── KafkaAuthenticationError          SASL login refused (wrong password or unknown user)
    │   ├── KafkaTlsError                     the broker's certificate failed verification (CA, host name)
    │   └── AuthorizationError                no ACL allows .operation on .resource_type .resource
    │       └── GroupAuthorizationError       no READ ACL on the consumer group
    ├── GatewayRequestError                   an HTTP gateway request refused (status, title, detail)
    ├── ReplayError                           replay plans, offset resets, bounded replays, DLQ tools
    │   ├── ReplayInputError (ValueError)     bad input: unknown group/topic/partition, future time,
    │   │                                     offset out of range, malformed plan file
    │   ├── GroupActiveError                  the group has live members (listed): offsets untouched
    │   └── StalePlanError                    the cluster moved since the plan was made (says what)
    ├── RequestError                          request-reply over Kafka
    │   └── RequestTimeoutError (TimeoutError)  no reply before the deadline
    └── SerdeError                            the Avro codec (Confluent wire format)
        ├── EncodeError (ValueError)          a record does not fit its schema
        ├── EnvelopeError (ValueError)        envelope headers missing or malformed
        ├── RegistryError                     the schema registry failed or refused
        │   └── RegistryUnavailableError      no answer within the timeouts and retries (nothing sent)
        └── DecodeError                       a payload cannot be read (names topic/partition/offset)
            ├── UnknownMagicByteError         not Confluent-framed (first byte is not 0x00)
            ├── UnknownSchemaIdError          the registry has no schema with that id
            ├── CorruptPayloadError           truncated, garbage or trailing bytes
            └── SchemaMismatchError           a sound payload whose writer schema the model cannot read

Control-flow signals are a separate branch, raised by handlers to steer the consumer runner;
they are not errors and are not caught by ``except EvstreamError``::

    EvstreamSignal
    ├── DeadLetter                            send this record to the dead-letter topic now
    ├── SkipEvent                             stream apps: this event has no effect (inner join miss)
    └── WaitForRow                            stream apps: hold this event until a table row arrives
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:  # the tree stays import-light: no client library loads with it
    from uuid import UUID

    from confluent_kafka import KafkaError

__all__ = [
    "AuthorizationError",
    "ClusterUnavailableError",
    "ConfigError",
    "CopartitioningError",
    "CorruptPayloadError",
    "DeadLetter",
    "DecodeError",
    "DeliveryFailedError",
    "DeliveryIndeterminateError",
    "DependencyResolutionError",
    "EncodeError",
    "EnvelopeError",
    "EventValidationError",
    "EvstreamError",
    "EvstreamSignal",
    "GatewayRequestError",
    "GroupActiveError",
    "GroupAuthorizationError",
    "IncompatibleSchemaError",
    "KafkaAuthenticationError",
    "KafkaSecurityError",
    "KafkaTlsError",
    "MissingExtraError",
    "MissingTopicsError",
    "PartitionDecreaseError",
    "PortInUseError",
    "ProducerFatalError",
    "PublishAuthenticationError",
    "PublishError",
    "PublishTlsError",
    "RegistryError",
    "RegistryUnavailableError",
    "ReplayError",
    "ReplayInputError",
    "ReplicationChangeError",
    "RequestError",
    "RequestTimeoutError",
    "SchemaError",
    "SchemaHistoryError",
    "SchemaMismatchError",
    "SerdeError",
    "SkipEvent",
    "StackError",
    "StackNotRunningError",
    "StackStartError",
    "StackTimeoutError",
    "StalePlanError",
    "ToolNotFoundError",
    "TopicAuthorizationError",
    "TopicsAdminError",
    "TopicsError",
    "TopicsFileError",
    "UnknownConfigKeyError",
    "UnknownEventTypeError",
    "UnknownMagicByteError",
    "UnknownSchemaIdError",
    "WaitForRow",
]


class EvstreamError(Exception):
    """Root of every error evstream raises on purpose."""


class ConfigError(EvstreamError, ValueError):
    """Settings are invalid or cannot be turned into client configuration."""


class UnknownConfigKeyError(ConfigError):
    """A passthrough client property that librdkafka does not know."""

    def __init__(self, key: str, detail: str = "") -> None:
        self.key = key
        msg = f"unknown Kafka client property {key!r}"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class MissingExtraError(ConfigError):
    """A feature needs an extra that is not installed; the message says what to ``pip install``.

    ``extra`` is the extra's name (``gateway``, ``streams``, ``rocksdb``, ``otel``); ``module``
    the import that failed.
    """

    def __init__(self, feature: str, extra: str, module: str) -> None:
        self.feature, self.extra, self.module = feature, extra, module
        super().__init__(f"{feature} needs the {extra!r} extra: pip install 'evstream[{extra}]'")


class CopartitioningError(ConfigError):
    """A stream is joined with a table whose partitions do not line up with the stream's
    (``.topics``: each topic involved and its partition count)."""

    def __init__(self, message: str, *, topics: dict[str, int]) -> None:
        super().__init__(message)
        self.topics = topics


class StackError(EvstreamError):
    """The local Kafka + schema registry stack could not do what was asked."""


class ToolNotFoundError(StackError):
    """A required executable (java, mvn) is missing or too old."""


class DependencyResolutionError(StackError):
    """Maven failed to resolve the pinned Kafka or registry artifacts."""


class PortInUseError(StackError):
    """A port the stack was asked to use is already bound."""

    def __init__(self, port: int) -> None:
        self.port = port
        super().__init__(f"port {port} on 127.0.0.1 is already in use; pick another or omit it")


class StackStartError(StackError):
    """A stack process exited while starting; ``log_tail`` holds its last log lines."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        self.log_tail = log_tail
        super().__init__(message)


class StackTimeoutError(StackError, TimeoutError):
    """A stack process did not become ready before its deadline."""


class StackNotRunningError(StackError):
    """No stack is recorded in the data directory (or its processes are gone)."""


class TopicsError(EvstreamError):
    """Topics-as-code failed."""


class TopicsFileError(TopicsError, ValueError):
    """The topics declaration file is malformed (unknown key, bad value, duplicate)."""


class PartitionDecreaseError(TopicsError):
    """A declaration asks for fewer partitions than the topic has; Kafka cannot do that."""


class ReplicationChangeError(TopicsError):
    """A declaration changes the replication factor of an existing topic."""


class TopicsAdminError(TopicsError):
    """The cluster refused a create, alter or describe call."""


class MissingTopicsError(TopicsError, ValueError):
    """A consumer group's retry or dead-letter topics do not exist; the runner does not create them.

    ``topics`` lists the missing names; the message says how to declare them.
    """

    def __init__(self, group_id: str, sources: tuple[str, ...] | list[str], topics: list[str]) -> None:
        self.group_id = group_id
        self.sources = tuple(sources)
        self.topics = topics
        flags = " ".join(f"--topic {s}" for s in self.sources)
        super().__init__(
            f"group {group_id!r} needs topic(s) that do not exist: {', '.join(topics)}; declare them"
            f" (evstream topics add-retry-topics -f topics.yaml --group {group_id} {flags})"
            " and run evstream topics apply -f topics.yaml"
        )


class SerdeError(EvstreamError):
    """Encoding or decoding an event failed."""


class EncodeError(SerdeError, ValueError):
    """A record does not match its Avro schema; nothing was produced."""


class RegistryError(SerdeError):
    """The schema registry failed, was unreachable, or refused a schema."""


class RegistryUnavailableError(RegistryError):
    """The registry did not answer (timed out, refused the connection, 5xx) within the client's
    timeouts and retries (:class:`evstream.settings.RegistrySettings`). ``url`` is the registry's."""

    def __init__(self, message: str, *, url: str = "") -> None:
        self.url = url
        super().__init__(message)


class DecodeError(SerdeError):
    """A payload could not be decoded; ``where`` names the record (``topic[partition]@offset``)."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}" if where else reason)


class UnknownMagicByteError(DecodeError):
    """The payload does not start with the Confluent magic byte 0x00."""


class UnknownSchemaIdError(DecodeError):
    """The payload names a schema id the registry does not have."""


class CorruptPayloadError(DecodeError):
    """The Avro body is truncated, garbage, or followed by extra bytes."""


class SchemaMismatchError(DecodeError):
    """The payload is sound, but its writer schema does not resolve into the reader's (the model's)
    schema: e.g. a foreign producer's record lacks a field the model has without a default."""


class EnvelopeError(SerdeError, ValueError):
    """Envelope headers are missing or malformed."""


class SchemaError(EvstreamError):
    """The schema catalog or its committed history is wrong."""


class UnknownEventTypeError(SchemaError, LookupError, ValueError):
    """No event model is registered under that type name."""


class EventValidationError(SchemaError, ValueError):
    """An event does not validate against its model; the message names the field."""

    def __init__(self, event_type: str, field: str, message: str) -> None:
        self.event_type = event_type
        self.field = field
        super().__init__(f"{event_type}: field {field!r}: {message}")


class SchemaHistoryError(SchemaError, ValueError):
    """A model's schema differs from its latest committed version, or the history is missing."""


class IncompatibleSchemaError(SchemaError, ValueError):
    """A schema change breaks the subject's compatibility mode; the message names the field."""


class PublishError(EvstreamError):
    """A publish did not succeed."""


class _DeliveryError(PublishError):
    """The outcome of one event's delivery, with the event and the Kafka error as attributes.

    ``topic`` and ``event_id`` name the event (``None`` only where no single event is meant);
    ``kafka_error`` is confluent-kafka's ``KafkaError`` (``.code()``, ``.name()``, ``.str()``)
    when the client reported one.
    """

    def __init__(
        self,
        message: str,
        *,
        topic: str | None = None,
        event_id: UUID | None = None,
        kafka_error: KafkaError | None = None,
    ) -> None:
        super().__init__(message)
        self.topic, self.event_id, self.kafka_error = topic, event_id, kafka_error

    def for_event(self, topic: str, event_id: UUID) -> Self:
        """The same outcome, stated for one event (a transaction's events share one cause)."""
        return type(self)(
            f"{topic}: event {event_id}: {self}", topic=topic, event_id=event_id, kafka_error=self.kafka_error
        )


class DeliveryFailedError(_DeliveryError):
    """The broker refused the event: it was not written."""


class DeliveryIndeterminateError(_DeliveryError):
    """The delivery timed out in flight: the event may or may not have been written."""


class ClusterUnavailableError(DeliveryFailedError):
    """No broker of the cluster has been reachable for longer than the producer's
    ``cluster_down_fail_s``: the event was refused at once (or purged from the local queue before
    it was ever sent), so it was not written. ``down_for_s`` says for how long no broker answered."""

    def __init__(
        self,
        message: str,
        *,
        topic: str | None = None,
        event_id: UUID | None = None,
        kafka_error: KafkaError | None = None,
        down_for_s: float = 0.0,
    ) -> None:
        super().__init__(message, topic=topic, event_id=event_id, kafka_error=kafka_error)
        self.down_for_s = down_for_s


class ProducerFatalError(PublishError):
    """librdkafka reported a fatal error: the underlying producer instance can do nothing more.

    ``kafka_error`` is the fatal error librdkafka reported (``.name()``: ``_FENCED``,
    ``INVALID_TXN_STATE``, ``_INCONSISTENT``...), ``recovered`` whether :class:`EventProducer`
    replaced the instance (a transactional producer: a new instance with the same
    ``transactional.id`` fences the old one), ``event_ids`` the events whose outcome it decided.
    """

    def __init__(
        self,
        message: str,
        *,
        kafka_error: KafkaError | None = None,
        recovered: bool = False,
        event_ids: tuple[UUID, ...] = (),
    ) -> None:
        super().__init__(message)
        self.kafka_error, self.recovered, self.event_ids = kafka_error, recovered, event_ids


class KafkaSecurityError(EvstreamError):
    """The cluster refused who the client is (authentication, TLS) or what it asked (ACLs)."""


class KafkaAuthenticationError(KafkaSecurityError):
    """SASL login refused: a wrong password or an unknown user (Kafka does not say which)."""


class KafkaTlsError(KafkaSecurityError):
    """The broker's certificate failed verification (another CA, or a host name it does not name).

    evstream never falls back to an unverified connection."""


class AuthorizationError(KafkaSecurityError):
    """No ACL allows ``operation`` on ``resource_type`` ``resource`` for the client's principal."""

    resource_type: str = ""
    operation: str = ""

    def __init__(
        self, message: str, *, resource_type: str = "", resource: str = "", operation: str = ""
    ) -> None:
        super().__init__(message)
        self.resource = resource
        if resource_type:
            self.resource_type = resource_type
        if operation:
            self.operation = operation


class TopicAuthorizationError(DeliveryFailedError, AuthorizationError):
    """The principal may not WRITE to the topic: the event was not written (``.topic`` names it)."""

    resource_type = "topic"
    operation = "WRITE"

    def __init__(self, message: str, **options: Any) -> None:
        super().__init__(message, **options)
        self.resource = self.topic or ""


class PublishAuthenticationError(DeliveryFailedError, KafkaAuthenticationError):
    """A publish refused because the producer cannot log in (SASL): not queued or purged, not written."""


class PublishTlsError(DeliveryFailedError, KafkaTlsError):
    """A publish refused because the broker's certificate failed verification: not written."""


class GroupAuthorizationError(AuthorizationError):
    """The principal may not READ (join, commit in) the consumer group ``resource``."""

    resource_type = "group"
    operation = "READ"


class GatewayRequestError(EvstreamError):
    """A gateway request refused: the HTTP status, a title and the detail the client sees."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        errors: list[dict[str, object]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status, self.title, self.detail = status, title, detail
        self.errors, self.headers = errors, headers or {}


class ReplayError(EvstreamError):
    """A replay, offset reset or dead-letter operation could not be done."""


class ReplayInputError(ReplayError, ValueError):
    """The replay request itself is wrong (unknown group/topic, time in the future, bad plan file...)."""


class GroupActiveError(ReplayError):
    """The group has active members; offsets can only be changed while it is empty."""

    def __init__(self, group_id: str, members: list[str]) -> None:
        self.group_id = group_id
        self.members = members
        super().__init__(
            f"group {group_id!r} has {len(members)} active member(s): {', '.join(members)}; stop them first"
        )


class StalePlanError(ReplayError):
    """The cluster changed since the plan was made (committed offsets moved, retention deleted records)."""

    def __init__(self, changes: list[str]) -> None:
        self.changes = changes
        super().__init__("the plan is stale, make a new one: " + "; ".join(changes))


class RequestError(EvstreamError):
    """A request-reply exchange over Kafka failed."""


class RequestTimeoutError(RequestError, TimeoutError):
    """No reply arrived before the deadline (a reply arriving later is discarded and counted)."""

    def __init__(self, message: str, request_id: str) -> None:
        self.request_id = request_id
        super().__init__(message)


class EvstreamSignal(Exception):
    """Root of control-flow signals a handler raises to steer the consumer runner."""


class SkipEvent(EvstreamSignal):
    """Raised in a stream handler (``Table.lookup(..., missing="skip")``): the event has no effect."""


class WaitForRow(EvstreamSignal):
    """Raised by ``Table.lookup(key, missing="wait")`` when the row is missing: the event is held
    and its handler runs again, from the start, once the row arrives (let it propagate)."""

    def __init__(self, table: str, key: str) -> None:
        super().__init__(f"{table}: no row for {key!r} yet; the event waits for it")
        self.table = table
        self.key = key


class DeadLetter(EvstreamSignal):
    """Raised by a handler: do not retry, send the record to the dead-letter topic with this reason."""
