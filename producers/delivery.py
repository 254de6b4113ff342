"""What a publish returns: a future that resolves to a :class:`Delivery` or a typed error."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from confluent_kafka import KafkaError

from evstream.errors import DeliveryFailedError, DeliveryIndeterminateError, PublishError
from evstream.security import topic_write_error

__all__ = ["Delivery", "DeliveryFuture", "classify"]

log = logging.getLogger("evstream.producer")

# Errors after which the broker may have written the event: report "indeterminate", never "lost".
_INDETERMINATE = {
    KafkaError._PURGE_INFLIGHT,
    KafkaError._FATAL,
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
}


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where Kafka acknowledged an event."""

    topic: str
    partition: int
    offset: int
    event_id: UUID
    event_type: str


class DeliveryFuture:
    """The outcome of one publish, resolved by the producer's delivery callback.

    ``concurrent.futures.Future`` allocates a condition variable per instance, which costs more
    than the rest of a publish; these share one condition per producer. ``result()`` blocks with
    an optional timeout (``TimeoutError``); ``await future`` works in asyncio.
    """

    __slots__ = ("_callbacks", "_cond", "_done", "_error", "_value")

    def __init__(self, cond: threading.Condition) -> None:
        self._cond = cond
        self._done = False
        self._value: Delivery | None = None
        self._error: PublishError | None = None
        self._callbacks: list[Callable[[DeliveryFuture], None]] | None = None

    def done(self) -> bool:
        return self._done

    def _wait(self, timeout: float | None) -> None:
        if not self._done:
            with self._cond:
                if not self._cond.wait_for(self.done, timeout):
                    raise TimeoutError(f"no delivery report within {timeout}s")

    def result(self, timeout: float | None = None) -> Delivery:
        """The :class:`Delivery`; raises DeliveryFailedError or DeliveryIndeterminateError."""
        self._wait(timeout)
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value

    def exception(self, timeout: float | None = None) -> PublishError | None:
        self._wait(timeout)
        return self._error

    def add_done_callback(self, fn: Callable[[DeliveryFuture], None]) -> None:
        """Call ``fn(self)`` once resolved (at once if it already is), in the resolving thread."""
        with self._cond:
            if not self._done:
                self._callbacks = [*(self._callbacks or []), fn]
                return
        fn(self)

    def _resolve(self, value: Delivery | None, error: PublishError | None) -> None:
        with self._cond:
            self._value, self._error, self._done = value, error, True
            callbacks, self._callbacks = self._callbacks, None
            self._cond.notify_all()
        for fn in callbacks or ():
            try:
                fn(self)
            except Exception:  # a callback must never break delivery reporting for the others
                log.exception("delivery callback failed")

    def __await__(self) -> Generator[Any, None, Delivery]:
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        waiter: asyncio.Future[Delivery] = loop.create_future()

        def copy(done: DeliveryFuture) -> None:
            if waiter.cancelled():
                return
            if done._error is not None:
                waiter.set_exception(done._error)
            elif done._value is not None:
                waiter.set_result(done._value)

        def hand_over(done: DeliveryFuture) -> None:
            if threading.get_ident() == loop_thread:  # resolved by a poll(0) on the loop's own thread
                loop.call_soon(copy, done)  # no wake-up write needed
            elif not loop.is_closed():  # the awaiting loop may be gone (e.g. after a timeout)
                loop.call_soon_threadsafe(copy, done)

        self.add_done_callback(hand_over)
        return waiter.__await__()


def classify(err: KafkaError, *, topic: str, event_id: UUID) -> PublishError:
    """The typed error for a failed delivery: indeterminate when it may have been written."""
    denied = topic_write_error(err, topic=topic, event_id=event_id)
    if denied is not None:  # no WRITE ACL: refused before anything was appended
        return denied
    detail = f"{topic}: event {event_id}: {err.str()} ({err.name()})"
    if err.code() in _INDETERMINATE:
        return DeliveryIndeterminateError(
            f"{detail}; it may or may not have been written", topic=topic, event_id=event_id, kafka_error=err
        )
    return DeliveryFailedError(
        f"{detail}; it was not written", topic=topic, event_id=event_id, kafka_error=err
    )
