"""Publishing: EventProducer (sync and async), transactions, delivery results, settings."""

from producers.delivery import Delivery, DeliveryFuture
from producers.producer import AsyncEventProducer, EventProducer
from producers.settings import ProducerSettings

__all__ = ["AsyncEventProducer", "Delivery", "DeliveryFuture", "EventProducer", "ProducerSettings"]
