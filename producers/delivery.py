"""What a publish returns: a future that resolves to a :class:`Delivery` or a typed error."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Generator
from functools import partial
from typing import Any, NamedTuple
from uuid import UUID

from confluent_kafka import KafkaError

from evstream.errors import DeliveryFailedError, DeliveryIndeterminateError, PublishError
from evstream.security import topic_write_error

__all__ = ["Delivery", "DeliveryFuture", "DeliveryTally", "classify"]

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


class Delivery(NamedTuple):
    """Where Kafka acknowledged an event (immutable; a named tuple: one is made per event)."""

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


class DeliveryTally:
    """The outcomes of events published without a future each (:meth:`EventProducer.send`,
    :meth:`EventProducer.publish_bulk`): counts, and the event id and error of every failure.

    ``acked`` were written; ``failed`` were not (:class:`DeliveryFailedError` and its kind);
    ``indeterminate`` may or may not have been (:class:`DeliveryIndeterminateError`). ``pending``
    are not reported yet. ``on_error(event_id, error)`` is called for each failure (from the
    thread serving delivery reports; without it a failure is logged at ERROR). The acked counter
    of the Prometheus metrics is added per batch (every 1000 reports, when nothing is pending,
    and at :meth:`EventProducer.flush`); these events are not in the publish latency histogram.
    """

    def __init__(
        self,
        producer: Any,
        on_error: Callable[[UUID, PublishError], None] | None,
        *,
        keep_errors: int | None = None,
    ) -> None:
        self._producer = producer
        self._on_error = on_error
        self._unreported: dict[tuple[str, str], int] = {}  # acked, not yet in the metrics
        self.expected = 0
        self.acked = 0
        self.failed = 0
        self.indeterminate = 0
        self.errors: list[tuple[UUID, PublishError]] = []  # every failure (send(): the last 10,000)
        self._keep = keep_errors

    @property
    def pending(self) -> int:
        return self.expected - self.acked - self.failed - self.indeterminate

    def __repr__(self) -> str:
        return (
            f"DeliveryTally(acked={self.acked}, failed={self.failed},"
            f" indeterminate={self.indeterminate}, pending={self.pending})"
        )

    def wait(self, timeout: float = 30.0) -> bool:
        """Serve delivery reports until none of these is pending (True) or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while self.pending > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._producer._require().flush(min(left, 0.1))
        self.publish_metrics()
        return self.pending <= 0

    def publish_metrics(self) -> None:
        """Add the acked events not yet counted to the Prometheus counter."""
        unreported, self._unreported = self._unreported, {}
        for (topic, event_type), count in unreported.items():
            self._producer._metrics(topic, event_type)[0].inc(count)

    def _expect(self, count: int) -> None:
        self.expected += count

    def _callback(self, event_type: str, event_id: UUID) -> Callable[[KafkaError | None, Any], None]:
        """The delivery callback of one event: a bare partial (librdkafka's delivery reports do
        not carry the headers, so the event id travels with it), no future, no Delivery."""
        return partial(self._producer._tallied, self, event_type, event_id)

    def _acked(self, topic: str, event_type: str) -> None:
        self.acked += 1
        key = (topic, event_type)
        self._unreported[key] = self._unreported.get(key, 0) + 1
        if self.acked % 1000 == 0 or self.pending == 0:
            self.publish_metrics()

    def _failed(self, event_id: UUID, error: PublishError, indeterminate: bool) -> None:
        if indeterminate:
            self.indeterminate += 1
        else:
            self.failed += 1
        self.errors.append((event_id, error))
        if self._keep is not None and len(self.errors) > self._keep:
            del self.errors[: len(self.errors) - self._keep]
        if self._on_error is None:
            log.error("event %s: %s", event_id, error)
            return
        try:
            self._on_error(event_id, error)
        except Exception:
            log.exception("on_error callback failed for event %s", event_id)
