"""What a publish returns: a future that resolves to a :class:`Delivery` or a typed error."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from uuid import UUID

from confluent_kafka import KafkaError

from evstream.errors import DeliveryFailedError, DeliveryIndeterminateError, PublishError

__all__ = ["Delivery", "DeliveryFuture", "classify"]

# Errors after which the broker may have written the event: report "indeterminate", never "lost".
_INDETERMINATE = {
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
}


@dataclass(frozen=True)
class Delivery:
    """Where Kafka acknowledged an event."""

    topic: str
    partition: int
    offset: int
    event_id: UUID
    event_type: str


DeliveryFuture = Future[Delivery]


def classify(err: KafkaError, *, topic: str, event_id: UUID) -> PublishError:
    """The typed error for a failed delivery: indeterminate when it may have been written."""
    detail = f"{topic}: event {event_id}: {err.str()} ({err.name()})"
    if err.code() in _INDETERMINATE:
        return DeliveryIndeterminateError(f"{detail}; it may or may not have been written")
    return DeliveryFailedError(f"{detail}; it was not written")
