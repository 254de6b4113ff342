"""Publishing: EventProducer (sync and async), transactions, delivery results, settings."""

from evstream.producers.delivery import Delivery, DeliveryFuture
from evstream.producers.producer import AsyncEventProducer, EventProducer, producer_health
from evstream.producers.settings import ProducerSettings

__all__ = [
    "AsyncEventProducer",
    "Delivery",
    "DeliveryFuture",
    "EventProducer",
    "ProducerSettings",
    "producer_health",
]
