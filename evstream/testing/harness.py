"""Test handlers without Kafka: a :class:`~evstream.consumers.Handlers` set run through the real
dispatcher on in-memory records.

:class:`HandlerHarness` encodes events with evstream's own codec (Confluent-framed Avro, on an
:class:`InMemorySchemaStore` unless given another :class:`~evstream.schemas.SchemaStore`, e.g. a
``RegistrySchemaStore`` over confluent-kafka's ``mock://`` client), adds the real
envelope headers and hands each record to the same :class:`Dispatcher` the
:class:`~evstream.consumers.ConsumerRunner` uses: decoding, dedupe, in-place retries, retry
topics, block-and-retry, dead letters and their headers are the production code. Only Kafka is
replaced: records written to retry and dead-letter topics are kept in lists, and time does not
pass (in-place backoff is zero, a retry-topic record is due as soon as
:meth:`HandlerHarness.deliver_pending` delivers it).

.. code-block:: python

    with HandlerHarness(handlers) as h:
        h.send(OrderPlaced(...))
        h.send_raw(b"garbage", event_type="OrderPlaced")
        assert [type(e) for e in h.handled] == [OrderPlaced]
        assert h.dead_letters[0].reason == "undecodable"
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Self

from confluent_kafka import Message

from evstream.consumers.dedupe import DedupeStore
from evstream.consumers.dispatch import Dispatcher, RunStats
from evstream.consumers.failures import DLQ_PREFIX, RETRY_PREFIX, Headers
from evstream.consumers.handlers import Handler, Handlers, HandlerSpec
from evstream.consumers.routing import FailureRouter, RetryTopics
from evstream.consumers.settings import ConsumerSettings
from evstream.errors import ConfigError, EnvelopeError, EvstreamError
from evstream.schemas import AvroCodec, Catalog, Envelope, Event, SchemaStore

__all__ = ["HandlerHarness", "InMemorySchemaStore", "Outcome", "OutcomeKind", "RoutedRecord"]

OutcomeKind = Literal[
    "handled", "duplicate", "skipped", "retry_topic", "dead_lettered", "blocked", "waiting", "queued"
]
"""What one delivery of a record came to.

``handled``, ``duplicate`` (its event id was handled before), ``skipped`` (no handler, skip
policy), ``retry_topic`` (written to the next retry tier), ``dead_lettered``; ``blocked``: an
ordered handler failed and its partition is held (block-and-retry), ``waiting``: held for
another reason (the registry failed), ``queued``: not delivered yet because its partition is
held (as the runner pauses it). Held and queued records go on with :meth:`HandlerHarness.deliver_pending`.
"""

_CREATE_TIME = 1  # librdkafka's TIMESTAMP_CREATE_TIME


class InMemorySchemaStore:
    """A :class:`~evstream.schemas.SchemaStore` in a dict: one id per distinct schema text (the
    same schema under two subjects shares its id, as in a registry), ids from 1."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._schemas: dict[int, str] = {}
        self._subjects: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def register(self, subject: str, schema: str) -> int:
        """The id of ``schema``, registering it (and recording it under ``subject``) the first time."""
        with self._lock:
            found = self._ids.get(schema)
            if found is None:
                found = self._ids[schema] = len(self._ids) + 1
                self._schemas[found] = schema
            versions = self._subjects.setdefault(subject, [])
            if found not in versions:
                versions.append(found)
            return found

    def schema(self, schema_id: int) -> str | None:
        """The schema text of ``schema_id``, or None."""
        return self._schemas.get(schema_id)

    def subjects(self) -> dict[str, list[int]]:
        """Subject -> the schema ids registered under it, in order."""
        return {subject: list(ids) for subject, ids in self._subjects.items()}


@dataclass(frozen=True, slots=True)
class RoutedRecord:
    """A record the dispatcher wrote to a retry or dead-letter topic: the original key and value,
    the original headers followed by ``evstream.retry.*`` or ``evstream.dlq.*`` ones."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def is_dead_letter(self) -> bool:
        """True for a dead-letter record, False for a retry-topic record."""
        return any(k.startswith(DLQ_PREFIX) for k, _ in self.headers)

    def header(self, name: str) -> str | None:
        """The last header called ``name``, decoded, or None."""
        found = [v for k, v in self.headers if k == name]
        return found[-1].decode(errors="replace") if found else None

    def _meta(self, name: str) -> str:
        prefix = DLQ_PREFIX if self.is_dead_letter else RETRY_PREFIX
        return self.header(prefix + name) or ""

    @property
    def group(self) -> str:
        """The consumer group that dead-lettered it ('' for a retry-topic record)."""
        return self._meta("group") if self.is_dead_letter else ""

    @property
    def reason(self) -> str:
        """Why it was dead-lettered: ``handler``, ``undecodable`` or ``unknown_type`` (retry: ``retry``)."""
        return self._meta("reason") if self.is_dead_letter else "retry"

    @property
    def error_type(self) -> str:
        """The class name of the error (``DeadLetter`` when the handler refused the record)."""
        return self._meta("error-type")

    @property
    def error_message(self) -> str:
        """The error's message (at most 2000 characters)."""
        return self._meta("error-message")

    @property
    def attempts(self) -> int:
        """Handler attempts so far, in place and through retry topics (0: never handled)."""
        return int(self._meta("attempts") or 0)

    @property
    def tier(self) -> int:
        """The retry tier a retry-topic record was written to (0 for a dead letter)."""
        return 0 if self.is_dead_letter else int(self._meta("tier") or 0)

    @property
    def source(self) -> tuple[str, int, int]:
        """``(topic, partition, offset)`` of the original record, also after retry topics."""
        return self._meta("topic"), int(self._meta("partition") or 0), int(self._meta("offset") or 0)

    @property
    def envelope(self) -> Envelope | None:
        """The event's envelope, or None when the original record had none."""
        try:
            return Envelope.from_headers(self.headers)
        except EnvelopeError:
            return None


@dataclass(frozen=True, slots=True)
class Outcome:
    """One delivery of one record: what it came to, the record, its event when handled, the
    in-place retries it took and the record written to a retry or dead-letter topic, if any."""

    kind: OutcomeKind
    record: Message = field(repr=False)
    event: Event | None = None
    retries: int = 0
    routed: RoutedRecord | None = None


class HandlerHarness:
    """Run ``handlers`` through the real dispatcher on in-memory records, as consumer group
    ``group_id`` (the retry-topic names include it). Use as a context manager, or call
    :meth:`start` and :meth:`close`.

    ``settings`` are the :class:`ConsumerSettings` the runner would use (retry attempts, retry
    tiers, ordered-handler limits, unknown-event policy...); their in-place backoff is replaced
    by zero. ``dedupe`` is the store the runner would get (e.g. ``InMemoryDedupeStore()``); it
    is not closed by the harness. ``schema_store`` defaults to a fresh :class:`InMemorySchemaStore`.
    ``catalog`` is the one the runner would get: the models records without envelope headers
    (foreign producers) are read into.
    """

    def __init__(
        self,
        handlers: Handlers,
        *,
        group_id: str = "harness",
        topics: list[str] | None = None,
        settings: ConsumerSettings | None = None,
        dedupe: DedupeStore | None = None,
        schema_store: SchemaStore | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.handlers = handlers
        self.catalog = catalog
        self.group_id = group_id
        self.topics = topics or handlers.topics
        base = settings or ConsumerSettings()
        self.settings = base.model_copy(update={"retry_wait_initial_s": 0.0, "retry_wait_max_s": 0.0})
        self.dedupe = dedupe
        self.stats = RunStats()
        self.retry = RetryTopics(group_id, tuple(self.topics), self.settings.retry_topic_delays_s)
        self.outcomes: list[Outcome] = []
        """Every delivery, in order."""
        self.handled: list[Event] = []
        """The events handlers finished without an error, in order."""
        self.retry_records: list[RoutedRecord] = []
        """Every record written to a retry topic, in order (also those delivered since)."""
        self.dead_letters: list[RoutedRecord] = []
        """Every record written to a dead-letter topic, in order."""
        self.schema_store = schema_store or InMemorySchemaStore()
        self._codec: AvroCodec | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dispatcher: Dispatcher | None = None
        self._offsets: dict[tuple[str, int], int] = {}
        self._held: dict[tuple[str, int], deque[Message]] = {}
        self._retries: list[tuple[RoutedRecord, int]] = []  # written, not delivered yet
        self._written: list[RoutedRecord] = []  # by the delivery in progress
        self._finished: Event | None = None  # the event a handler finished in the delivery in progress

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Build the codec, the event loop for async handlers and the dispatcher."""
        if self._dispatcher is not None:
            return self
        self._codec = AvroCodec(self.schema_store)
        self._loop = asyncio.new_event_loop()
        router = FailureRouter(self._write, self.retry, self.settings.dead_letter_suffix)
        self._dispatcher = Dispatcher(
            self.group_id,
            self._observed(),
            self.settings,
            self._codec,
            router,
            self.dedupe,
            self.stats,
            self._loop,
            **({"catalog": self.catalog} if self.catalog is not None else {}),
        )
        return self

    def _observed(self) -> Handlers:
        """The same handlers (shapes adapted already, same models and ordering), each call observed
        so the harness knows which event a handler finished; everything else is the dispatcher's."""
        observed = Handlers()
        for event_type in self.handlers.event_types:
            spec = self.handlers.lookup(event_type)
            if spec is not None and spec.batch:
                observed.on_batch(spec.model)(self._observe_batch(spec))
            elif spec is not None:
                observed.on(spec.model, ordered=spec.ordered)(self._observe(spec.handler))
        return observed

    def _observe_batch(self, spec: HandlerSpec) -> Callable[[list[Any], list[Any]], Any]:
        """A batch handler observed: the harness delivers one record at a time, so a batch is one
        event (flushed right after it was dispatched)."""
        fn = spec.function
        assert fn is not None

        def call(events: list[Any], contexts: list[Any]) -> Awaitable[None] | None:
            result: Awaitable[None] | None = fn(events, contexts) if spec.batch_context else fn(events)
            if inspect.isawaitable(result):
                return self._finish_later(result, events[-1])
            self._finished = events[-1]
            return None

        return call

    def _observe(self, handler: Handler) -> Handler:
        def call(event: Any, ctx: Any) -> Awaitable[None] | None:
            result = handler(event, ctx)
            if inspect.isawaitable(result):
                return self._finish_later(result, event)
            self._finished = event
            return None

        return call

    async def _finish_later(self, result: Awaitable[None], event: Event) -> None:
        await result
        self._finished = event

    def close(self) -> None:
        """Close the event loop (records and outcomes stay readable)."""
        if self._loop is not None:
            self._loop.close()
            self._loop = None
        self._dispatcher = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ sending

    def encode(self, event: Event, topic: str | None = None) -> bytes:
        """``event`` as the producer writes it: Confluent-framed Avro under the subject the
        catalog's (or the model's) subject strategy names."""
        codec = self._require()[1]
        model = type(event)
        target = topic or model.topic
        subject = self.catalog.subject(model, target) if self.catalog is not None else model.subject(target)
        return codec.encoder(subject, model.avro_schema_dict(), strict=False)(event.model_dump())

    def send(
        self,
        event: Event,
        *,
        topic: str | None = None,
        key: str | bytes | None = None,
        partition: int = 0,
        envelope: Envelope | None = None,
        headers: Iterable[tuple[str, str | bytes]] = (),
    ) -> Outcome:
        """Deliver ``event`` as a record on ``topic`` (its model's topic by default), keyed by its
        aggregate id, with a new envelope (or ``envelope``: send one twice to test dedupe)."""
        model = type(event)
        if envelope is None:
            envelope = Envelope(event_type=model.event_type(), source="evstream.testing")
        elif envelope.event_type != model.event_type():
            raise EnvelopeError(
                f"envelope says {envelope.event_type!r} but the event is {model.event_type()!r}"
            )
        return self.send_raw(
            self.encode(event, topic),
            topic=topic or model.topic,
            key=key if key is not None else event.aggregate_id(),
            partition=partition,
            headers=[*envelope.to_headers(), *headers],
        )

    def send_raw(
        self,
        value: bytes | None,
        *,
        topic: str | None = None,
        key: str | bytes | None = None,
        partition: int = 0,
        headers: Iterable[tuple[str, str | bytes | None]] = (),
        event_type: str | None = None,
    ) -> Outcome:
        """Deliver a record of raw bytes. ``event_type`` adds envelope headers of that type (a
        valid envelope around a bad body); without it and without ``headers`` the record has no
        envelope. ``topic`` may be left out when the handlers consume one topic."""
        if topic is None:
            if len(self.topics) != 1:
                raise ConfigError(f"say which topic: the handlers consume {', '.join(self.topics)}")
            topic = self.topics[0]
        pairs: Headers = list(Envelope(event_type=event_type).to_headers()) if event_type else []
        pairs += headers
        return self.deliver(self._record(topic, partition, key, value, pairs))

    def deliver(self, record: Message) -> Outcome:
        """Hand one prepared record to the dispatcher (or queue it behind its held partition)."""
        dispatcher = self._require()[0]
        tp = (record.topic() or "", record.partition() or 0)
        queue = self._held.get(tp)
        if queue is not None:  # the runner keeps a held partition paused: later records wait
            queue.append(record)
            queued = Outcome("queued", record)
            self.outcomes.append(queued)
            return queued
        before = replace(self.stats)
        self._written, self._finished = [], None
        due = dispatcher.process(record)
        dispatcher.flush_batches()  # a batch handler's batch: this record
        dispatcher.flush_metrics()
        if due is not None:
            self._held[tp] = deque([record])
        kind = self._kind(before, held=due is not None)
        event = self._finished if kind == "handled" else None
        if event is not None:
            self.handled.append(event)
        outcome = Outcome(
            kind,
            record,
            event=event,
            retries=self.stats.retried - before.retried,
            routed=self._written[0] if self._written else None,
        )
        self.outcomes.append(outcome)
        return outcome

    @property
    def pending(self) -> int:
        """Records waiting for :meth:`deliver_pending`: held, queued behind them, or in retry topics."""
        return sum(len(q) for q in self._held.values()) + len(self._retries)

    def deliver_pending(self, *, max_rounds: int = 100) -> list[Outcome]:
        """Go on as the runner would once every wait is over: deliver held partitions again (their
        queued records after them) and the records written to retry topics, round after round,
        until nothing is pending. Returns those deliveries' outcomes; raises
        :class:`EvstreamError` if records are still pending after ``max_rounds``."""
        outcomes: list[Outcome] = []
        for _ in range(max_rounds):
            if not self.pending:
                return outcomes
            held, self._held = self._held, {}
            for tp, queue in held.items():
                while queue:
                    outcomes.append(self.deliver(queue.popleft()))
                    if tp in self._held:  # held again: the rest still waits behind it
                        self._held[tp].extend(queue)
                        break
            retries, self._retries = self._retries, []
            for routed, partition in retries:
                now = str(int(time.time() * 1000)).encode()  # its delay is over
                pairs: Headers = [
                    (k, now if k == f"{RETRY_PREFIX}due-at-ms" else v) for k, v in routed.headers
                ]
                outcomes.append(
                    self.deliver(self._record(routed.topic, partition, routed.key, routed.value, pairs))
                )
        if self.pending:
            raise EvstreamError(f"{self.pending} record(s) still pending after {max_rounds} rounds")
        return outcomes

    # ------------------------------------------------------------------ internals

    def _require(self) -> tuple[Dispatcher, AvroCodec]:
        if self._dispatcher is None or self._codec is None:
            raise EvstreamError("the harness is not started; use `with HandlerHarness(...)` or call start()")
        return self._dispatcher, self._codec

    def _record(
        self, topic: str, partition: int, key: str | bytes | None, value: bytes | None, headers: Headers
    ) -> Message:
        offset = self._offsets.get((topic, partition), 0)
        self._offsets[(topic, partition)] = offset + 1
        return Message(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key.encode() if isinstance(key, str) else key,
            value=value,
            headers=[(k, v.encode() if isinstance(v, str) else v) for k, v in headers],
            timestamp=(_CREATE_TIME, int(time.time() * 1000)),
        )

    def _write(self, msg: Message, target: str, headers: Headers) -> None:
        """The :data:`FailureWriter` seam: keep the record instead of producing it."""
        routed = RoutedRecord(
            target,
            msg.key(),
            msg.value(),
            tuple((k, v.encode() if isinstance(v, str) else v or b"") for k, v in headers),
        )
        self._written.append(routed)
        if self.retry.tier_of(target):
            self.retry_records.append(routed)
            self._retries.append((routed, msg.partition() or 0))
        else:
            self.dead_letters.append(routed)

    def _kind(self, before: RunStats, *, held: bool) -> OutcomeKind:
        """What the delivery came to, read from the run statistics it changed."""
        after = self.stats
        if held:
            return "blocked" if after.blocked > before.blocked else "waiting"
        changed: list[tuple[int, int, OutcomeKind]] = [
            (after.dead_lettered, before.dead_lettered, "dead_lettered"),
            (after.retry_topic, before.retry_topic, "retry_topic"),
            (after.duplicates, before.duplicates, "duplicate"),
            (after.skipped, before.skipped, "skipped"),
        ]
        return next((kind for now, then, kind in changed if now > then), "handled")
