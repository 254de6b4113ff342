"""One record at a time: decode, dedupe, call the handler, retry in place, route failures.

A record with a ``ce_type`` header is dispatched on it. A record without one (a foreign
producer's: Confluent's serializer, no envelope) is dispatched on its writer schema's record
name, into the model whose record it is, with an envelope derived from its position
(:meth:`evstream.schemas.Envelope.derived`). A Confluent-framed key is decoded too
(``ctx.decoded_key``).

:meth:`Dispatcher.process` returns ``None`` when the record is done with (handled, skipped, a
duplicate, or safely written to a retry or dead-letter topic) so its offset may be stored, or
the epoch time before which the record must not be tried again: the runner then pauses the
partition and seeks back to the record (retry-topic delays, block-and-retry, the registry down).

A schema id the registry does not know is not proof that the record is garbage (a registry
restarted without it, a schema replicated late): the record is held and its id asked for again
with backoff for ``unknown_schema_grace_s`` (outcome ``schema_held`` in the metrics, a warning in
the log), and only then dead-lettered with reason ``unknown_schema_id``; a redrive brings it back
once the registry knows the id.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import stamina
from confluent_kafka import Message
from pydantic import ValidationError

from evstream.consumers.dedupe import DedupeStore
from evstream.consumers.failures import Origin, due_ms
from evstream.consumers.handlers import Handlers, HandlerSpec, MessageContext
from evstream.consumers.metrics import CONSUMED, HANDLER_LATENCY, OUTCOMES
from evstream.consumers.routing import FailureRouter
from evstream.consumers.settings import ConsumerSettings
from evstream.consumers.tracing import run_in_span, tracing_enabled
from evstream.errors import (
    DeadLetter,
    DecodeError,
    EnvelopeError,
    EvstreamError,
    RegistryError,
    SchemaMismatchError,
    UnknownEventTypeError,
    UnknownSchemaIdError,
)
from evstream.schemas import (
    AvroCodec,
    Catalog,
    Envelope,
    Event,
    EventReader,
    RecordCoordinates,
)
from evstream.schemas.causation import reset_cause, set_cause
from evstream.schemas.events import EnvelopeHeaders

__all__ = ["Dispatcher", "RunStats", "known_models"]

_UNFRAMED_KEY_TTL_S = 60.0  # then a key schema id unknown to the registry is asked for again
_UNFRAMED_KEY_IDS_MAX = 1024
log = logging.getLogger("evstream.consumer")
Position = tuple[str, int, int]


@dataclass
class RunStats:
    """What one :meth:`consumers.ConsumerRunner.run` did."""

    consumed: int = 0
    handled: int = 0
    retried: int = 0
    retry_topic: int = 0
    blocked: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    schema_held: int = 0  # times a record with a schema id unknown to the registry was held
    registry_held: int = 0  # times a partition was held because the registry did not answer
    duplicates: int = 0
    commits: int = 0
    rewinds: int = 0  # batches cut short by the batch deadline (records fetched again)
    batches_split: int = 0  # batch-handler calls that raised: their records were tried one by one
    lost: int = 0  # partitions taken away without a chance to commit (session or poll interval expired)


def _log_context(envelope: Envelope | EnvelopeHeaders) -> dict[str, str]:
    """The event's ids for log records written outside the handler's context."""
    full = _full(envelope)
    trace = full.traceparent.split("-")[1] if full.traceparent else ""
    event_id = str(full.event_id)
    return {"event_id": event_id, "correlation_id": full.correlation_id or event_id, "trace_id": trace}


def _full(envelope: Envelope | EnvelopeHeaders) -> Envelope:
    return envelope if isinstance(envelope, Envelope) else envelope.envelope


def observe_many(histogram: Any, values: list[float]) -> None:
    """``histogram.observe(v)`` for each of ``values``, bucketed in one go (prometheus_client's
    observe walks the buckets in Python and takes a lock per increment)."""
    bounds = getattr(histogram, "_upper_bounds", None)
    if bounds is None or not hasattr(histogram, "_buckets") or not hasattr(histogram, "_sum"):
        for value in values:
            histogram.observe(value)
        return
    counts: dict[int, int] = {}
    for value in values:
        index = bisect_left(bounds, value)
        counts[index] = counts.get(index, 0) + 1
    histogram._sum.inc(sum(values))
    for index, count in counts.items():
        histogram._buckets[index].inc(count)


def known_models(handlers: Handlers, catalog: Catalog | None = None) -> Catalog:
    """The models a foreign record's record name is looked up in: the handled ones and ``catalog``'s.

    A record of a catalog model without a handler follows ``unknown_event_policy``; a record
    whose name matches no model is dead-lettered (reason ``unknown_schema``).
    """
    models: dict[str, type[Event]] = {m.event_type(): m for m in catalog or ()}
    for event_type in handlers.event_types:
        spec = handlers.lookup(event_type)
        if spec is not None:
            models.setdefault(event_type, spec.model)
    return Catalog(
        models.values(), subject_strategy=catalog.subject_strategy if catalog else "TopicRecordNameStrategy"
    )


class _Failed(Exception):
    """Internal: the handler failed on every in-place attempt."""

    def __init__(self, attempts: int, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.attempts = attempts
        self.cause = cause


class _Transient(Exception):
    """Internal: wraps one failed attempt so stamina retries it (DeadLetter is not wrapped)."""


class Dispatcher:
    """Turns records into handler calls for one group; owns the in-place retry and failure routing."""

    def __init__(
        self,
        group_id: str,
        handlers: Handlers,
        settings: ConsumerSettings,
        codec: AvroCodec,
        router: FailureRouter,
        dedupe: DedupeStore | None,
        stats: RunStats,
        loop: asyncio.AbstractEventLoop,
        *,
        catalog: Catalog | None = None,
    ) -> None:
        self.group_id = group_id
        self.handlers = handlers
        self.settings = settings
        self.codec = codec
        self.router = router
        self.dedupe = dedupe
        self.stats = stats
        self.loop = loop
        self._blocked: dict[Position, tuple[Origin, int]] = {}  # block-and-retry: origin, rounds
        self._unknown_ids: dict[Position, tuple[float, int]] = {}  # unknown schema id: first seen, rounds
        self._children: dict[tuple[str, str], Any] = {}
        self._last_attempt = 0
        self._consumed: dict[str, int] = {}  # counted per record, published per batch (flush_metrics)
        self._handled: dict[str, int] = {}
        self._latencies: dict[str, list[float]] = {}  # handler run times, observed per batch
        self._tiers: dict[str, int] = {}  # topic -> retry tier (0: a source topic)
        # batch handlers: records decoded and waiting for flush_batches(), by handler
        self._pending: dict[Any, tuple[HandlerSpec, list[tuple[Message, Event, Any, Any]]]] = {}
        self._pending_first: dict[tuple[str, int], int] = {}  # partition -> first waiting offset
        self._traced = tracing_enabled()
        self._decoders: dict[
            type[Event], Callable[[bytes | None, RecordCoordinates | None], dict[str, Any]]
        ] = {}
        self.reader = EventReader(codec, known_models(handlers, catalog))
        # Key schema ids the registry did not know, until when: a key that only looks framed (a
        # Java LongSerializer key starts with 0x00 too) must not cost a registry call per record.
        self._unframed_key_ids: dict[int, float] = {}

    def forget(self, partitions: set[tuple[str, int]]) -> None:
        """Drop block-and-retry state of partitions this member no longer owns."""
        for position in [p for p in self._blocked if (p[0], p[1]) in partitions]:
            del self._blocked[position]
        for position in [p for p in self._unknown_ids if (p[0], p[1]) in partitions]:
            del self._unknown_ids[position]

    def flush_metrics(self) -> None:
        """Add the consumed/handled counts and handler run times since the last call to the
        Prometheus metrics (the runner calls it once per batch)."""
        for counts, outcome in ((self._consumed, "consumed"), (self._handled, "handled")):
            for topic, count in counts.items():
                self._metric(topic, outcome).inc(count)
            counts.clear()
        for topic, values in self._latencies.items():
            if values:
                observe_many(self._metric(topic, "latency"), values)
                values.clear()

    def process(self, msg: Message) -> float | None:
        topic = msg.topic() or ""
        tier = self._tiers.get(topic)
        if tier is None:
            tier = self._tiers[topic] = self.router.retry.tier_of(topic)
        if tier:
            due = due_ms(msg) / 1000
            if due > time.time():
                return due  # not yet: the runner holds the partition until then
        self.stats.consumed += 1
        self._consumed[topic] = self._consumed.get(topic, 0) + 1
        where = RecordCoordinates(topic, msg.partition(), msg.offset())
        try:
            spec, envelope = self._route(msg, where)
            if spec is None:
                self._unknown(msg, envelope)
                return None
            decode = self._decoders.get(spec.model)
            if decode is None:
                decode = self._decoders[spec.model] = self.codec.decoder(spec.model.avro_schema_dict())
            event = spec.model.model_validate(decode(msg.value(), where))
            decoded_key = self._decoded_key(msg.key(), where)
        except UnknownSchemaIdError as exc:  # not proof of garbage: the registry may not know it *yet*
            return self._unknown_schema_id(msg, exc)
        except (EnvelopeError, DecodeError, ValidationError, UnknownEventTypeError) as exc:
            # UnknownEventTypeError: no model has the writer schema's record name
            reason = (
                "unknown_schema"
                if isinstance(exc, UnknownEventTypeError)
                else "schema_mismatch"
                if isinstance(exc, SchemaMismatchError)
                else "undecodable"
            )
            self._dead_letter(msg, Origin.of(msg), reason, exc)
            return None
        except RegistryError as exc:  # the registry is down, not the record: hold and try again
            log.warning("schema registry unavailable, holding %s[%s]: %s", topic, msg.partition(), exc)
            self.stats.consumed -= 1
            self.stats.registry_held += 1
            return time.time() + self.settings.retry_wait_max_s
        if self._unknown_ids:
            self._unknown_ids.pop((topic, msg.partition() or 0, msg.offset() or 0), None)
        return self._handle(msg, spec, event, envelope, tier, decoded_key)

    def _unknown_schema_id(self, msg: Message, exc: UnknownSchemaIdError) -> float | None:
        """Hold a record whose schema id the registry does not know, asking again with backoff for
        ``unknown_schema_grace_s``; then dead-letter it (reason ``unknown_schema_id``)."""
        topic = msg.topic() or ""
        position = (topic, msg.partition() or 0, msg.offset() or 0)
        now = time.time()
        first, rounds = self._unknown_ids.get(position, (now, 0))
        grace = self.settings.unknown_schema_grace_s
        if now - first >= grace:
            self._unknown_ids.pop(position, None)
            log.error("%s still unknown after %.0fs: dead-lettered", exc, now - first)
            self._dead_letter(msg, Origin.of(msg), "unknown_schema_id", exc)
            return None
        self._unknown_ids[position] = (first, rounds + 1)
        self.stats.consumed -= 1
        self.stats.schema_held += 1
        self._metric(topic, "schema_held").inc()
        wait = min(
            self.settings.unknown_schema_retry_wait_s * 2.0**rounds,
            self.settings.unknown_schema_retry_wait_max_s,
            max(0.0, first + grace - now),
        )
        log.warning(
            "%s; holding %s[%s] and asking again in %.1fs (dead-lettered after %.0fs more)",
            exc,
            topic,
            msg.partition(),
            wait,
            first + grace - now,
        )
        return now + wait

    def _route(
        self, msg: Message, where: RecordCoordinates
    ) -> tuple[HandlerSpec | None, Envelope | EnvelopeHeaders]:
        """The record's handler (None: no handler for its type) and envelope (checked, parsed
        only when a field of it is read)."""
        headers = msg.headers()
        if headers:
            checked = EnvelopeHeaders.read(headers)
            if checked is not None:
                return self.handlers.lookup(checked.event_type), checked
        # A foreign record: the type is its writer schema's record name.
        model = self.reader.model_for(msg.value(), where)
        origin = Origin.of(msg)  # a retry topic's copy keeps the original's id and time
        envelope = Envelope.derived(
            model.event_type(), origin.topic, origin.partition, origin.offset, origin.timestamp_ms
        )
        return self.handlers.lookup(model.event_type()), envelope

    def _decoded_key(self, key: str | bytes | None, where: RecordCoordinates) -> Any:
        """A Confluent-framed Avro key, decoded with its writer schema; None for any other key.

        A key that only looks framed (magic byte, unknown id or bad body) stays undecoded;
        :class:`RegistryError` propagates (the partition is held).
        """
        if not isinstance(key, bytes) or len(key) <= 5 or key[0] != 0:
            return None
        schema_id = int.from_bytes(key[1:5], "big")
        until = self._unframed_key_ids.get(schema_id)
        if until is not None and time.monotonic() < until:
            return None
        try:
            return self.codec.decode_any(key, where)
        except UnknownSchemaIdError:
            if len(self._unframed_key_ids) >= _UNFRAMED_KEY_IDS_MAX:
                self._unframed_key_ids.clear()
            self._unframed_key_ids[schema_id] = time.monotonic() + _UNFRAMED_KEY_TTL_S
            log.debug(
                "key of %s: schema id %d unknown; keys with it stay undecoded for a while", where, schema_id
            )
            return None
        except DecodeError as exc:
            log.debug("key of %s is not Confluent-framed Avro: %s", where, exc)
            return None

    def _handle(
        self,
        msg: Message,
        spec: HandlerSpec,
        event: Event,
        envelope: Envelope | EnvelopeHeaders,
        tier: int,
        decoded_key: Any = None,
        *,
        alone: bool = False,
    ) -> float | None:
        topic = msg.topic() or ""
        if self.dedupe is not None and self.dedupe.seen(_full(envelope).event_id):
            self.stats.duplicates += 1
            self._metric(topic, "duplicate").inc()
            return None
        position = (topic, msg.partition() or 0, msg.offset() or 0)
        if spec.batch and not tier and not alone:  # run with its batch by flush_batches()
            waiting = self._pending.get(spec.handler)
            if waiting is None:
                waiting = self._pending[spec.handler] = (spec, [])
            waiting[1].append((msg, event, envelope, decoded_key))
            self._pending_first.setdefault((topic, position[1]), position[2])
            return None
        blocked = self._blocked.get(position)
        prior = blocked[0] if blocked else Origin.of(msg) if tier else None
        try:
            self._attempts(spec, event, msg, envelope, prior.attempts if prior else 0, tier, decoded_key)
        except DeadLetter as exc:
            self._blocked.pop(position, None)
            made = self._last_attempt - (prior.attempts if prior else 0)
            self._dead_letter(msg, (prior or Origin.of(msg)).after(made), "handler", exc)
            return None
        except _Failed as failed:
            return self._failed(msg, spec, (prior or Origin.of(msg)).after(failed.attempts), failed, position)
        self._blocked.pop(position, None)
        if self.dedupe is not None:
            self.dedupe.mark(_full(envelope).event_id)
        self.stats.handled += 1
        self._handled[topic] = self._handled.get(topic, 0) + 1
        return None

    # ------------------------------------------------------------------ batch handlers

    def flush_batches(self) -> None:
        """Call each batch handler once with the records collected for it since the last call.

        The runner calls it at the end of every fetched batch, before it stores offsets. A batch
        that raises is split: each record goes through the one-record path (in-place retries,
        then retry topic or dead letter), so only the records that fail on their own are routed.
        """
        pending, self._pending = self._pending, {}
        for spec, items in pending.values():
            self._run_batch(spec, items)
        self._pending_first.clear()

    def unfinished(self) -> dict[tuple[str, int], int]:
        """Partition -> first offset of records collected for a batch handler and not run (an
        error stopped the batch): the runner stores no offset past them. Forgets them."""
        first, self._pending_first = self._pending_first, {}
        self._pending.clear()
        return first

    def _run_batch(self, spec: HandlerSpec, items: list[tuple[Message, Event, Any, Any]]) -> None:
        assert spec.function is not None
        events = [item[1] for item in items]
        topic = items[0][0].topic() or ""
        started = time.perf_counter()
        try:
            if spec.batch_context:
                contexts = [MessageContext(m, env, 1, 0, decoded_key=k) for m, _, env, k in items]
                result = spec.function(events, contexts)
            else:
                result = spec.function(events)
            if result is not None and inspect.isawaitable(result):
                self.loop.run_until_complete(result)
        except Exception as exc:  # DeadLetter too: find the record(s) it was about, one at a time
            log.warning(
                "batch handler %s failed for %d record(s), trying each on its own: %r",
                getattr(spec.function, "__qualname__", spec.function),
                len(items),
                exc,
            )
            self.stats.batches_split += 1
            for msg, event, envelope, key in items:
                self._handle(msg, spec, event, envelope, 0, key, alone=True)
            return
        finally:
            self._latencies.setdefault(topic, []).append(time.perf_counter() - started)
        self.stats.handled += len(items)
        for msg, _, envelope, _ in items:
            if self.dedupe is not None:
                self.dedupe.mark(_full(envelope).event_id)
            name = msg.topic() or ""
            self._handled[name] = self._handled.get(name, 0) + 1

    # ------------------------------------------------------------------ attempts

    def _attempts(
        self,
        spec: HandlerSpec,
        event: Event,
        msg: Message,
        envelope: Envelope | EnvelopeHeaders,
        before: int,
        tier: int,
        decoded_key: Any = None,
    ) -> None:
        """Up to ``retry_attempts`` calls with backoff; raises _Failed or DeadLetter."""
        try:  # the common case first: one call, no retry machinery
            self._call(spec, event, msg, envelope, before + 1, tier, decoded_key)
            return
        except _Transient as exc:
            if self.settings.retry_attempts == 1:
                raise _Failed(1, exc.__cause__ or exc) from exc
            last: BaseException = exc
        attempt = 1
        time.sleep(self.settings.retry_wait_initial_s)  # back off before the first retry too
        try:
            for retry in stamina.retry_context(
                on=_Transient,
                attempts=self.settings.retry_attempts - 1,
                timeout=None,
                wait_initial=self.settings.retry_wait_initial_s,
                wait_max=self.settings.retry_wait_max_s,
            ):
                with retry:
                    attempt += 1
                    self.stats.retried += 1
                    self._metric(msg.topic() or "", "retried").inc()
                    self._call(spec, event, msg, envelope, before + attempt, tier, decoded_key)
                    return
        except _Transient as exc:
            last = exc
        raise _Failed(attempt, last.__cause__ or last)

    def _call(
        self,
        spec: HandlerSpec,
        event: Event,
        msg: Message,
        envelope: Envelope | EnvelopeHeaders,
        attempt: int,
        tier: int,
        decoded_key: Any = None,
    ) -> None:
        """One attempt, with the event as the cause (and in a span when traced). A handler taking
        the event alone gets no :class:`MessageContext` built for it."""
        self._last_attempt = attempt
        started = time.perf_counter()
        try:
            if self._traced:
                ctx = MessageContext(msg, envelope, attempt, tier, decoded_key=decoded_key)
                run_in_span(
                    _full(envelope),
                    msg.topic() or "",
                    self.group_id,
                    lambda: self._complete(spec.handler(event, ctx)),
                    traced=True,
                )
            else:
                token = set_cause(envelope)
                try:
                    if spec.context or spec.function is None:
                        result = spec.handler(
                            event, MessageContext(msg, envelope, attempt, tier, decoded_key=decoded_key)
                        )
                    else:
                        result = spec.function(event)
                    if result is not None and inspect.isawaitable(result):
                        self.loop.run_until_complete(result)
                finally:
                    reset_cause(token)
        except DeadLetter:
            raise
        except Exception as exc:  # any handler failure is retried, then routed
            log.warning(
                "handler failed (attempt %d) for event %s: %r",
                attempt,
                _full(envelope).event_id,
                exc,
                extra=_log_context(envelope),
            )
            raise _Transient(str(exc)) from exc
        finally:
            topic = msg.topic() or ""
            latencies = self._latencies.get(topic)
            if latencies is None:
                latencies = self._latencies[topic] = []
            latencies.append(time.perf_counter() - started)

    def _complete(self, result: Any) -> None:
        """Run an async handler's coroutine to its end (in the cause's context)."""
        if inspect.isawaitable(result):
            self.loop.run_until_complete(result)

    # ------------------------------------------------------------------ failures

    def _failed(
        self, msg: Message, spec: HandlerSpec, origin: Origin, failed: _Failed, position: Position
    ) -> float | None:
        topic = msg.topic() or ""
        if spec.ordered:
            limit = self.settings.ordered_max_attempts
            if limit and origin.attempts >= limit:
                self._blocked.pop(position, None)
                self._dead_letter(msg, origin, "handler", failed.cause)
                return None
            rounds = self._blocked.get(position, (origin, 0))[1]
            self._blocked[position] = (origin, rounds + 1)
            self.stats.blocked += 1
            self._metric(topic, "blocked").inc()
            wait = min(
                self.settings.ordered_retry_wait_s * 2.0**rounds, self.settings.ordered_retry_wait_max_s
            )
            log.warning(
                "%s[%s]@%s blocked for %.1fs after %d attempts",
                topic,
                msg.partition(),
                msg.offset(),
                wait,
                origin.attempts,
            )
            return time.time() + wait
        tier = self.router.next_tier(origin)
        if tier is None:
            self._dead_letter(msg, origin, "handler", failed.cause)
            return None
        self.router.to_retry(msg, origin, failed.cause, tier)
        self.stats.retry_topic += 1
        self._metric(topic, "retry_topic").inc()
        return None

    def _unknown(self, msg: Message, envelope: Envelope | EnvelopeHeaders) -> None:
        policy = self.settings.unknown_event_policy
        if policy == "skip":
            self.stats.skipped += 1
            self._metric(msg.topic() or "", "skipped").inc()
        elif policy == "dead_letter":
            error = EvstreamError(f"no handler for event type {envelope.event_type!r}")
            self._dead_letter(msg, Origin.of(msg), "unknown_type", error)
        else:
            raise EvstreamError(
                f"no handler for event type {envelope.event_type!r} at {msg.topic()}@{msg.offset()}"
            )

    def _dead_letter(self, msg: Message, origin: Origin, reason: str, error: BaseException | None) -> None:
        self.router.to_dead_letter(msg, origin, reason, error)
        self.stats.dead_lettered += 1
        self._metric(msg.topic() or "", "dead_lettered").inc()

    def _metric(self, topic: str, outcome: str) -> Any:
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
