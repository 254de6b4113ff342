"""Request-reply over Kafka: publish a request, await the one reply caused by it.

The requester publishes the request event with an ``evstream.reply-to`` header naming its reply
topic, and waits for a record on that topic whose ``ce_causationid`` is the request's event id.
On the consumer side, :func:`reply_with` turns a handler that returns an event into a
responder: the reply is published to the request's reply-to topic (inheriting correlation and
causation from the request) and acknowledged before the request's offset is stored.

A reply that arrives after its request timed out is discarded and counted
(``Requester.late_replies`` and ``evstream_replies{outcome="late"}``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Self, TypeVar

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient

from evstream.consumers.handlers import MessageContext
from evstream.consumers.metrics import REPLIES
from evstream.errors import (
    DeadLetter,
    EnvelopeError,
    EvstreamError,
    RequestError,
    RequestTimeoutError,
    SerdeError,
    TopicsAdminError,
)
from evstream.producers.producer import EventProducer
from evstream.schemas import AvroCodec, Envelope, Event, RegistrySchemaStore, SchemaStore
from evstream.schemas.causation import current_cause
from evstream.settings import KafkaSettings, RegistrySettings, librdkafka_config

__all__ = ["REPLY_TO", "Requester", "reply_with"]

REPLY_TO = "evstream.reply-to"
R = TypeVar("R", bound=Event)
E = TypeVar("E", bound=Event)
log = logging.getLogger("evstream.reply")


class Requester:
    """Sends requests with ``producer`` and reads replies from ``reply_topic``.

    Every requester reads every partition of the reply topic from its end at :meth:`start`
    (no consumer group, nothing committed) and ignores replies to other requesters' requests.
    Constructing it does no I/O.
    """

    def __init__(
        self,
        producer: EventProducer,
        reply_topic: str,
        *,
        kafka: KafkaSettings | None = None,
        registry: RegistrySettings | None = None,
        schema_store: SchemaStore | None = None,
        remember_timed_out: int = 10_000,
    ) -> None:
        self.producer = producer
        self.reply_topic = reply_topic
        self._kafka = kafka
        self._registry = registry
        self._store = schema_store
        self._remember = remember_timed_out
        self._pending: dict[str, tuple[Future[Any], type[Event]]] = {}
        self._timed_out: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: SchemaRegistryClient | None = None
        self._codec: AvroCodec | None = None
        self.late_replies = 0

    def start(self) -> Self:
        """Connect and start reading replies from the reply topic's current end."""
        if self._thread is not None:
            return self
        store = self._store
        if store is None:
            self._client = SchemaRegistryClient((self._registry or RegistrySettings()).client_config())
            store = RegistrySchemaStore(self._client)
        self._codec = AvroCodec(store)
        conf = librdkafka_config(self._kafka or KafkaSettings())
        consumer = Consumer(
            {**conf, "group.id": f"evstream-requester-{uuid.uuid4().hex}", "enable.auto.commit": False}
        )
        metadata = consumer.list_topics(self.reply_topic, timeout=30).topics.get(self.reply_topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            consumer.close()
            raise TopicsAdminError(f"reply topic {self.reply_topic!r} does not exist; create it first")
        starts = []
        for partition in metadata.partitions:
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(self.reply_topic, partition), timeout=30
            )
            starts.append(TopicPartition(self.reply_topic, partition, high))
        consumer.assign(starts)  # explicit offsets: no reply published after start() can be missed
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._read, args=(consumer,), name="evstream-replies", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop reading replies; requests still waiting fail with :class:`RequestError`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        with self._lock:
            waiting, self._pending = self._pending, {}
        for future, _model in waiting.values():
            if future.set_running_or_notify_cancel():
                future.set_exception(RequestError("the requester was closed before the reply arrived"))
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ requests

    def send(self, event: Event, reply: type[R], *, topic: str | None = None) -> tuple[str, Future[R]]:
        """Publish ``event`` as a request; returns its id and a future for the reply (no timeout)."""
        if self._thread is None:
            raise EvstreamError("the requester is not started")
        cause = current_cause()  # a request made inside a handler continues that event's story
        envelope = Envelope(
            event_type=event.event_type(),
            source=self.producer.settings.source,
            correlation_id=cause.correlation_id if cause else None,
            causation_id=cause.causation_id if cause else None,
            traceparent=cause.traceparent if cause else None,
        )
        request_id = str(envelope.event_id)
        future: Future[R] = Future()
        with self._lock:
            self._pending[request_id] = (future, reply)
        try:
            self.producer.publish(
                event, topic=topic, envelope=envelope, extra_headers=[(REPLY_TO, self.reply_topic.encode())]
            ).result(timeout=60)
        except BaseException:
            with self._lock:
                self._pending.pop(request_id, None)
            raise
        return request_id, future

    def request(self, event: Event, reply: type[R], *, timeout: float = 10.0, topic: str | None = None) -> R:
        """Publish ``event`` and return its reply; :class:`RequestTimeoutError` after ``timeout`` s."""
        request_id, future = self.send(event, reply, topic=topic)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            self._expire(request_id, event, timeout)
            return future.result(timeout=5)  # the reply won the race with the deadline

    async def arequest(
        self, event: Event, reply: type[R], *, timeout: float = 10.0, topic: str | None = None
    ) -> R:
        """The asyncio form of :meth:`request` (the publish acknowledgement runs in a thread)."""
        request_id, future = await asyncio.to_thread(self.send, event, reply, topic=topic)
        try:
            # shield: a timeout must not cancel the shared future under the reader thread's feet
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
        except TimeoutError:
            self._expire(request_id, event, timeout)
            return future.result(timeout=5)

    def _expire(self, request_id: str, event: Event, timeout: float) -> None:
        """Give up on ``request_id`` (a later reply counts as late) unless its reply just came.

        Raises :class:`RequestTimeoutError`; returns only when the reply won the race.
        """
        with self._lock:
            if self._pending.pop(request_id, None) is None:
                return  # the reply was set between the deadline and this lock
            self._timed_out[request_id] = None
            while len(self._timed_out) > self._remember:
                self._timed_out.popitem(last=False)
        raise RequestTimeoutError(
            f"no reply to {event.event_type()} {request_id} on {self.reply_topic} within {timeout:g}s",
            request_id,
        )

    # ------------------------------------------------------------------ replies

    def _read(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.1)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("reply topic error: %s", err.str())
                    continue
                try:
                    self._on_reply(msg)
                except Exception:  # one bad reply must not stop the replies of everyone else
                    log.exception("reply %s@%s could not be handled", msg.topic(), msg.offset())
        finally:
            consumer.close()

    def _on_reply(self, msg: Message) -> None:
        try:
            cause = Envelope.from_headers(msg.headers()).causation_id
        except EnvelopeError:
            return  # not an evstream reply
        if cause is None:
            return
        with self._lock:
            waiting = self._pending.pop(cause, None)
            late = waiting is None and cause in self._timed_out
            if late:
                del self._timed_out[cause]
                self.late_replies += 1
        if late:
            REPLIES.labels(self.reply_topic, "late").inc()
            return
        if waiting is None:
            return  # another requester's reply
        future, model = waiting
        if not future.set_running_or_notify_cancel():
            return  # the caller cancelled it
        assert self._codec is not None
        try:
            future.set_result(model.model_validate(self._codec.decode(msg.value(), model.avro_schema_dict())))
            REPLIES.labels(self.reply_topic, "matched").inc()
        except (SerdeError, ValueError) as exc:
            future.set_exception(exc)


def reply_with(
    producer: EventProducer, *, timeout: float = 30.0
) -> Callable[[Callable[[E, MessageContext], Event]], Callable[[E, MessageContext], None]]:
    """Make a handler that returns a reply event into a responder.

    The reply goes to the request's ``evstream.reply-to`` topic and is acknowledged before the
    handler returns (so the request's offset is stored only after the reply is safe). A request
    without a reply-to header is dead-lettered: nobody could receive its reply.
    """

    def wrap(fn: Callable[[E, MessageContext], Event]) -> Callable[[E, MessageContext], None]:
        @functools.wraps(fn)
        def respond(event: E, ctx: MessageContext) -> None:
            reply_to = next((v.decode() for k, v in ctx.headers if k == REPLY_TO), None)
            if not reply_to:
                raise DeadLetter(
                    f"{ctx.envelope.event_type} {ctx.envelope.event_id} has no {REPLY_TO} header"
                )
            producer.publish(fn(event, ctx), topic=reply_to).result(timeout=timeout)

        return respond

    return wrap
