"""The consumer-group runner: decode, dispatch by event type, retry, dead-letter; at-least-once.

An offset is stored only after its record was handled, skipped by policy, or safely written to
the dead-letter topic (the DLQ write is acknowledged first), and stored offsets are committed
every ``commit_interval_s``, on partition revocation and on shutdown. A crash therefore replays
at most the records since the last commit; a :class:`DedupeStore` makes those replays no-ops.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stamina
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from pydantic import ValidationError

from consumers.deadletter import dead_letter_headers, header_pairs
from consumers.dedupe import DedupeStore
from consumers.handlers import Handlers, MessageContext
from consumers.metrics import CONSUMED, HANDLER_LATENCY, OUTCOMES
from consumers.settings import ConsumerSettings
from evstream.errors import DeadLetter, DecodeError, EnvelopeError, EvstreamError, PublishError
from evstream.settings import KafkaSettings, RegistrySettings, librdkafka_config
from schemas import AvroCodec, Envelope, RecordCoordinates, RegistrySchemaStore, SchemaStore

__all__ = ["ConsumerRunner", "RunStats"]

log = logging.getLogger("evstream.consumer")


class _Transient(Exception):
    """Internal: wraps a handler failure so stamina retries it (DeadLetter is not wrapped)."""


@dataclass
class RunStats:
    """What one :meth:`ConsumerRunner.run` did."""

    consumed: int = 0
    handled: int = 0
    retried: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    duplicates: int = 0
    commits: int = 0


class ConsumerRunner:
    """Run ``handlers`` in consumer group ``group_id``. Constructing it does no I/O."""

    def __init__(
        self,
        group_id: str,
        handlers: Handlers,
        *,
        topics: list[str] | None = None,
        kafka: KafkaSettings | None = None,
        registry: RegistrySettings | None = None,
        settings: ConsumerSettings | None = None,
        schema_store: SchemaStore | None = None,
        dedupe: DedupeStore | None = None,
    ) -> None:
        self.group_id = group_id
        self.handlers = handlers
        self.topics = topics or handlers.topics
        self._kafka = kafka
        self._registry = registry
        self.settings = settings or ConsumerSettings()
        self._store = schema_store
        self.dedupe = dedupe
        self.stats = RunStats()
        self._stop = threading.Event()
        self._consumer: Consumer | None = None
        self._dlq: Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._children: dict[tuple[str, str], Any] = {}

    def stop(self) -> None:
        """Ask :meth:`run` to finish the record in hand, commit and return (thread- and signal-safe)."""
        self._stop.set()

    # ------------------------------------------------------------------ main loop

    def run(self, *, install_signal_handlers: bool = False, until_idle_s: float | None = None) -> RunStats:
        """Consume until :meth:`stop` (or SIGTERM/SIGINT when ``install_signal_handlers``).

        ``until_idle_s`` also returns after that long without a record (handy for batch jobs
        and tests). Offsets are committed before returning.
        """
        if not self.topics:
            raise EvstreamError("no topics: register handlers or pass topics=")
        kafka = self._kafka or KafkaSettings()
        conf = librdkafka_config(kafka)
        registry_client = None
        store = self._store
        if store is None:
            registry_client = SchemaRegistryClient((self._registry or RegistrySettings()).client_config())
            store = RegistrySchemaStore(registry_client)
        codec = AvroCodec(store)
        previous = self._install_signals() if install_signal_handlers else {}
        consumer = self._consumer = Consumer({**conf, **self.settings.librdkafka(self.group_id)})
        self._dlq = Producer({**conf, "acks": "all", "enable.idempotence": True, "linger.ms": 0})
        self._loop = asyncio.new_event_loop()
        consumer.subscribe(self.topics, on_revoke=self._on_revoke)
        last_commit = last_record = time.monotonic()
        try:
            while not self._stop.is_set():
                batch = consumer.consume(self.settings.batch_size, self.settings.poll_timeout_s)
                for msg in batch:
                    err = msg.error()
                    if err is not None:
                        if err.fatal():
                            raise EvstreamError(f"fatal consumer error: {err.str()}")
                        continue
                    self._process(msg, codec)
                    consumer.store_offsets(message=msg)
                if batch:
                    last_record = time.monotonic()
                elif until_idle_s is not None and time.monotonic() - last_record > until_idle_s:
                    break
                if time.monotonic() - last_commit > self.settings.commit_interval_s:
                    self._commit()
                    last_commit = time.monotonic()
            self._commit()
        finally:
            consumer.close()
            self._consumer = None
            self._dlq.flush(10)
            self._loop.close()
            if registry_client is not None:
                registry_client.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.stats

    def _install_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, lambda *_: self._stop.set())
        return previous

    def _commit(self) -> None:
        if self._consumer is None:
            return
        try:
            self._consumer.commit(asynchronous=False)
            self.stats.commits += 1
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError._NO_OFFSET:
                return  # nothing stored since the last commit
            raise

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit what was handled before the partitions move to another member."""
        self._commit()

    # ------------------------------------------------------------------ one record

    def _process(self, msg: Message, codec: AvroCodec) -> None:
        topic = msg.topic() or ""
        self.stats.consumed += 1
        self._outcome(topic, "consumed").inc()
        first_failure = datetime.now(UTC)
        try:
            envelope = Envelope.from_headers(msg.headers())
        except EnvelopeError as exc:
            self._dead_letter(msg, "undecodable", exc, 0, first_failure)
            return
        found = self.handlers.lookup(envelope.event_type)
        if found is None:
            self._unknown(msg, envelope, first_failure)
            return
        model, handler = found
        where = RecordCoordinates(topic, msg.partition(), msg.offset())
        try:
            event = model.model_validate(codec.decode(msg.value(), model.avro_schema_dict(), where=where))
        except (DecodeError, ValidationError) as exc:
            self._dead_letter(msg, "undecodable", exc, 0, first_failure)
            return
        if self.dedupe is not None and self.dedupe.seen(envelope.event_id):
            self.stats.duplicates += 1
            self._outcome(topic, "duplicate").inc()
            return
        attempts = 1
        try:
            try:  # the common case first: one call, no retry machinery
                self._call(handler, event, msg, envelope, 1)
            except _Transient:
                if self.settings.retry_attempts == 1:
                    raise
                attempts = self._retry(handler, event, msg, envelope, topic)
        except DeadLetter as exc:
            self._dead_letter(msg, "handler", exc, attempts, first_failure)
            return
        except _Transient as exc:
            self._dead_letter(
                msg, "handler", exc.__cause__ or exc, self.settings.retry_attempts, first_failure
            )
            return
        if self.dedupe is not None:
            self.dedupe.mark(envelope.event_id)
        self.stats.handled += 1
        self._outcome(topic, "handled").inc()

    def _retry(self, handler: Any, event: Any, msg: Message, envelope: Envelope, topic: str) -> int:
        """Attempts 2..N with exponential backoff; returns the attempt that succeeded."""
        attempts = 1
        self._stop.wait(self.settings.retry_wait_initial_s)  # back off before the first retry too
        for attempt in stamina.retry_context(
            on=_Transient,
            attempts=self.settings.retry_attempts - 1,
            timeout=None,
            wait_initial=self.settings.retry_wait_initial_s,
            wait_max=self.settings.retry_wait_max_s,
        ):
            with attempt:
                attempts += 1
                self.stats.retried += 1
                self._outcome(topic, "retried").inc()
                self._call(handler, event, msg, envelope, attempts)
                return attempts
        raise _Transient("retries exhausted")  # not reached: stamina re-raises the last failure

    def _outcome(self, topic: str, outcome: str) -> Any:
        """Labelled metric children, cached: ``labels()`` is too slow to call per record."""
        key = (topic, outcome)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (
                CONSUMED.labels(topic, self.group_id)
                if outcome == "consumed"
                else HANDLER_LATENCY.labels(topic, self.group_id)
                if outcome == "latency"
                else OUTCOMES.labels(topic, self.group_id, outcome)
            )
        return child

    def _call(self, handler: Any, event: Any, msg: Message, envelope: Envelope, attempt: int) -> None:
        ts_type, ts = msg.timestamp()
        ctx = MessageContext(
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            timestamp=datetime.fromtimestamp(ts / 1000, UTC) if ts_type else None,
            key=msg.key(),
            headers=tuple(header_pairs(msg)),
            envelope=envelope,
            attempt=attempt,
        )
        started = time.perf_counter()
        try:
            result = handler(event, ctx)
            if inspect.isawaitable(result):
                assert self._loop is not None
                self._loop.run_until_complete(result)
        except DeadLetter:
            raise
        except Exception as exc:  # any handler failure is retried in place, then dead-lettered
            log.warning("handler failed (attempt %d) for event %s: %r", attempt, envelope.event_id, exc)
            raise _Transient(str(exc)) from exc
        finally:
            self._outcome(ctx.topic, "latency").observe(time.perf_counter() - started)

    def _unknown(self, msg: Message, envelope: Envelope, first_failure: datetime) -> None:
        policy = self.settings.unknown_event_policy
        if policy == "skip":
            self.stats.skipped += 1
            OUTCOMES.labels(msg.topic() or "", self.group_id, "skipped").inc()
        elif policy == "dead_letter":
            error = EvstreamError(f"no handler for event type {envelope.event_type!r}")
            self._dead_letter(msg, "unknown_type", error, 0, first_failure)
        else:
            raise EvstreamError(
                f"no handler for event type {envelope.event_type!r} at {msg.topic()}@{msg.offset()}"
            )

    def _dead_letter(
        self, msg: Message, reason: str, error: BaseException | None, attempts: int, first_failure: datetime
    ) -> None:
        """Write the record to ``<topic><suffix>`` and wait for the acknowledgement before moving on."""
        assert self._dlq is not None
        target = f"{msg.topic()}{self.settings.dead_letter_suffix}"
        outcome: list[KafkaError | None] = []
        self._dlq.produce(
            target,
            value=msg.value(),
            key=msg.key(),
            headers=dead_letter_headers(
                msg, reason=reason, error=error, attempts=attempts, first_failure=first_failure
            ),
            on_delivery=lambda err, _m: outcome.append(err),
        )
        self._dlq.flush(30)
        if not outcome or outcome[0] is not None:
            # Never store the offset of a record that is neither handled nor safely dead-lettered.
            detail = outcome[0].str() if outcome and outcome[0] is not None else "no acknowledgement in 30s"
            raise PublishError(f"dead-lettering {msg.topic()}@{msg.offset()} to {target} failed: {detail}")
        self.stats.dead_lettered += 1
        OUTCOMES.labels(msg.topic() or "", self.group_id, "dead_lettered").inc()
