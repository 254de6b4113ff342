"""Bounded replay: process exactly the records in [from, until) of a topic, then stop.

End offsets are fixed before the first record is read, so a replay stops on time even while
producers keep writing. It reads with its own consumer group ``evstream-replay.<name>`` (live
groups are untouched) by manual assignment, and commits its progress after each batch with the
partition's end bound in the commit metadata: running the same ``name`` again resumes where an
interrupted run stopped, with the same bounds; a finished run does nothing. The commit after a
batch does not wait for the coordinator; the one when the run ends (finished, stopped, or a
handler failed) does, so a resumed run starts exactly after the last record handled. Only a
crash (no final commit) can re-read records: those of the batches whose commit was in flight.

Records without a ``ce_type`` header (foreign producers) are read as the consumer group reads
them: typed by their writer schema's record name, with a derived envelope.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient
from pydantic import ValidationError

from evstream.consumers.dispatch import known_models
from evstream.consumers.failures import header_pairs
from evstream.consumers.handlers import Handlers, HandlerSpec, MessageContext
from evstream.consumers.replay.cluster import Cluster, Key
from evstream.consumers.replay.plan import epoch_ms, parse_datetime
from evstream.errors import DecodeError, EnvelopeError, ReplayError, ReplayInputError, UnknownEventTypeError
from evstream.schemas import (
    AvroCodec,
    Catalog,
    Envelope,
    EventReader,
    RecordCoordinates,
    RegistrySchemaStore,
    SchemaStore,
    event_type_header,
)
from evstream.schemas.events import EnvelopeHeaders
from evstream.settings import KafkaSettings, RegistrySettings, librdkafka_config

__all__ = ["BoundedReplay", "ReplayResult"]

log = logging.getLogger("evstream.replay")

_META = "evstream-replay:end="
Progress = Callable[[int, int], None]
READ_AHEAD: dict[str, Any] = {
    # With librdkafka's fetch defaults (1 MiB per partition, 50 MiB per request, 100,000 records
    # per partition queued) a replay slower than the fetcher held 250-370 MB of prefetched
    # records on 6 partitions, whatever queued.max.messages.kbytes said, and its RSS swung with
    # it. Smaller fetches keep the read-ahead at a few batches (measured: RSS 90-170 MB, no
    # creep). A partition over these thresholds is fetched again after fetch.queue.backoff.ms
    # (default 1 s, which left the replay waiting for records): 10 ms keeps the fetcher ahead.
    "queued.min.messages": 2_000,
    "queued.max.messages.kbytes": 4_096,
    "max.partition.fetch.bytes": 262_144,
    "fetch.max.bytes": 2_097_152,
    "fetch.queue.backoff.ms": 10,
}


def consumer_config(conf: dict[str, Any], group_id: str) -> dict[str, Any]:
    """The replay's consumer: manual offsets, and a read-ahead bounded by READ_AHEAD."""
    return {
        **conf,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",  # never jump to the end past unread records
        **READ_AHEAD,
        "on_commit": _committed,
    }


_malloc_trim: Callable[[int], int] | None = None


def release_free_memory() -> bool:
    """Return the C allocator's free memory to the OS (glibc ``malloc_trim(0)``); False where the
    allocator has no such call (musl, macOS), which is then a no-op.

    librdkafka allocates fetch buffers and records on its own threads and the consumer frees
    them on the caller's; glibc keeps such freed pages in its heaps. Measured on 2M records read
    with the replay's consumer settings: RSS +65 MB over the run without a trim, no net growth
    with one every second, at ~10 ms per trim (well under 1 % of a second of replay).
    """
    global _malloc_trim  # noqa: PLW0603 - resolved once
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (AttributeError, OSError):
            _malloc_trim = _no_trim
    return _malloc_trim is not _no_trim and bool(_malloc_trim(0))


def _no_trim(_pad: int) -> int:
    return 0


def _committed(err: KafkaError | None, partitions: list[TopicPartition]) -> None:
    """Outcome of an asynchronous progress commit (served by consume, on the replay's thread)."""
    if err is not None:
        log.warning("replay progress commit not done (the next commit carries it): %s", err.str())


@dataclass
class ReplayResult:
    """What a bounded replay did; ``ranges`` holds each partition's [start, end)."""

    name: str
    ranges: dict[Key, tuple[int, int]]
    resumed: bool
    processed: int = 0  # records read inside the bounds
    delivered: int = 0  # handled, or copied to the target topic
    skipped: int = 0  # filtered out by --type, or no handler for the type
    undecodable: int = 0  # not an event (bad envelope or body, no model for its record): skipped, warned
    per_partition: dict[Key, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(end - start for start, end in self.ranges.values())


@dataclass
class BoundedReplay:
    """One bounded replay of ``topic``. Give ``handlers`` or ``to_topic`` (exactly one).

    ``catalog``: models a record without ``ce_type`` may be besides the handled ones (records of
    those are skipped, like events without a handler). ``types`` filters by event type, which
    for such records is their model's (when copying to ``to_topic``: by ``ce_type`` only).
    """

    topic: str
    start: str  # "earliest", an offset, or an ISO-8601 datetime
    until: str = "now"  # "now", an offset, or an ISO-8601 datetime
    handlers: Handlers | None = None
    to_topic: str | None = None
    types: frozenset[str] = frozenset()
    name: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    kafka: KafkaSettings | None = None
    registry: RegistrySettings | None = None
    schema_store: SchemaStore | None = None
    batch_size: int = 1000
    catalog: Catalog | None = None
    # Every this many seconds, hand the allocator's free memory back to the OS (glibc
    # malloc_trim; 0: never): freed fetch buffers do not pile up in its heaps (release_free_memory).
    trim_memory_s: float = 1.0

    _reader: EventReader | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if (self.handlers is None) == (self.to_topic is None):
            raise ReplayInputError("give exactly one of a handler (--handler) or a target topic (--to-topic)")
        if self.to_topic == self.topic:
            raise ReplayInputError("--to-topic must differ from the replayed topic (it would never end)")

    @property
    def group_id(self) -> str:
        return f"evstream-replay.{self.name}"

    # ------------------------------------------------------------------ bounds

    def _bounds(self, cluster: Cluster, consumer: Consumer) -> tuple[dict[Key, tuple[int, int]], bool]:
        keys = [(self.topic, p) for p in cluster.partitions(self.topic)]
        committed = consumer.committed([TopicPartition(t, p) for t, p in keys], timeout=30)
        saved = {
            (tp.topic, tp.partition): (tp.offset, int(tp.metadata[len(_META) :]))
            for tp in committed
            if tp.offset >= 0 and tp.metadata and tp.metadata.startswith(_META)
        }
        earliest, end = cluster.earliest(keys), cluster.latest(keys)
        if saved:  # resume with the bounds of the first run
            ranges = {}
            for key in keys:
                if key not in saved:  # a partition added since the replay began: not part of it
                    ranges[key] = (end[key], end[key])
                    continue
                start, stop = saved[key]
                if start < earliest[key]:
                    log.warning(
                        "replay %s: %s[%d] %d..%d deleted by retention", self.name, *key, start, earliest[key]
                    )
                ranges[key] = (min(max(start, earliest[key]), stop), stop)
            return ranges, True
        starts = self._resolve(cluster, keys, self.start, earliest, end, "from")
        ends = (
            end if self.until == "now" else self._resolve(cluster, keys, self.until, earliest, end, "until")
        )
        return {k: (starts[k], max(starts[k], ends[k])) for k in keys}, False

    @staticmethod
    def _resolve(
        cluster: Cluster, keys: list[Key], text: str, earliest: dict[Key, int], end: dict[Key, int], what: str
    ) -> dict[Key, int]:
        if text == "earliest":
            return dict(earliest)
        if text.lstrip("-").isdigit():
            offset = int(text)
            for key in keys:
                if not 0 <= offset <= end[key]:
                    raise ReplayInputError(
                        f"--{what} {offset} is outside {key[0]}[{key[1]}]"
                        f" (offsets {earliest[key]}..{end[key]})"
                    )
            return {k: max(offset, earliest[k]) for k in keys}
        at = parse_datetime(text)
        if at > datetime.now(UTC):
            raise ReplayInputError(f"--{what} {text} is in the future")
        return cluster.for_time(keys, epoch_ms(at))

    # ------------------------------------------------------------------ run

    def run(self, *, progress: Progress | None = None, stop: threading.Event | None = None) -> ReplayResult:
        """Process the range; returns early (progress committed, resumable) when ``stop`` is set."""
        conf = librdkafka_config(self.kafka or KafkaSettings())
        cluster = Cluster(AdminClient(conf))
        consumer = Consumer(consumer_config(conf, self.group_id))
        client = None
        producer = None
        try:
            ranges, resumed = self._bounds(cluster, consumer)
            if not resumed:  # record the bounds first, so an interrupted run resumes with them
                consumer.commit(
                    offsets=[
                        TopicPartition(t, p, a, metadata=f"{_META}{b}") for (t, p), (a, b) in ranges.items()
                    ],
                    asynchronous=False,
                )
            result = ReplayResult(self.name, ranges, resumed)
            work = {k: r for k, r in ranges.items() if r[0] < r[1]}
            if not work:
                return result
            decode = None
            if self.handlers is not None:
                store = self.schema_store
                if store is None:
                    client = SchemaRegistryClient((self.registry or RegistrySettings()).client_config())
                    store = RegistrySchemaStore(client)
                decode = AvroCodec(store)
            else:
                producer = Producer(
                    {
                        **conf,
                        "acks": "all",
                        "enable.idempotence": True,
                        "linger.ms": 5,
                        "partitioner": "murmur2_random",
                    }
                )
            consumer.assign([TopicPartition(t, p, start) for (t, p), (start, _end) in work.items()])
            self._loop(consumer, producer, decode, ranges, work, result, progress, stop)
            return result
        finally:
            consumer.close()
            if producer is not None:
                producer.flush(30)
            if client is not None:
                client.close()

    def _loop(
        self,
        consumer: Consumer,
        producer: Producer | None,
        codec: AvroCodec | None,
        ranges: dict[Key, tuple[int, int]],
        work: dict[Key, tuple[int, int]],
        result: ReplayResult,
        progress: Progress | None,
        stop: threading.Event | None,
    ) -> None:
        remaining = set(work)
        position = {k: start for k, (start, _end) in work.items()}
        saved = dict(position)  # what a commit was issued for
        idle_since = trimmed = time.monotonic()
        try:
            while remaining and not (stop is not None and stop.is_set()):
                batch = consumer.consume(self.batch_size, 0.5)
                interrupted = self._batch(
                    batch, consumer, producer, codec, ranges, remaining, position, result, stop
                )
                touched = {k for k in work if position[k] != saved[k]}
                # Transaction markers and aborted records occupy offsets that are never delivered:
                # a partition is also done when the fetch position itself has passed its end (only
                # meaningful when every record handed over was processed).
                finished: set[Key] = set()
                for tp in [] if interrupted else consumer.position([TopicPartition(*k) for k in remaining]):
                    key = (tp.topic, tp.partition)
                    if tp.offset >= ranges[key][1]:
                        position[key] = max(position[key], ranges[key][1])
                        finished.add(key)
                if finished:
                    remaining -= finished
                    consumer.pause([TopicPartition(*k) for k in finished])
                if touched or finished:
                    # Progress after each batch, committed without waiting for the coordinator's
                    # answer (a crash re-reads at most the batches whose commit was in flight);
                    # the commit when the loop ends, however it ends, is synchronous.
                    self._checkpoint(consumer, producer, touched | finished, position, ranges, wait=False)
                    saved.update({k: position[k] for k in touched | finished})
                    idle_since = time.monotonic()
                    if self.trim_memory_s and idle_since - trimmed > self.trim_memory_s:
                        release_free_memory()
                        trimmed = time.monotonic()
                    if progress is not None:
                        progress(result.processed, result.total)
                elif time.monotonic() - idle_since > 60:
                    left = {f"{t}[{p}]": ranges[(t, p)][1] - position[(t, p)] for t, p in sorted(remaining)}
                    raise ReplayError(f"no records for 60 s with records still in range: {left}")
        finally:  # what was handled stays handled, also when a handler failed mid-batch or stop was set
            self._checkpoint(consumer, producer, set(work), position, ranges, wait=True)

    def _batch(
        self,
        batch: list[Message],
        consumer: Consumer,
        producer: Producer | None,
        codec: AvroCodec | None,
        ranges: dict[Key, tuple[int, int]],
        remaining: set[Key],
        position: dict[Key, int],
        result: ReplayResult,
        stop: threading.Event | None,
    ) -> bool:
        """Process one batch inside the bounds; True when ``stop`` cut it short."""
        one, counts = self._one, result.per_partition
        for msg in batch:
            if stop is not None and stop.is_set():
                return True  # the rest of the batch is read again on resume
            if msg.error() is not None and self._skip_error(msg):
                continue
            key = (msg.topic() or "", msg.partition() or 0)
            offset = msg.offset() or 0
            if key not in remaining or offset >= ranges[key][1]:
                continue  # past the snapshot: new records are not part of this replay
            one(msg, producer, codec, result)
            position[key] = offset + 1
            counts[key] = counts.get(key, 0) + 1
            if offset + 1 >= ranges[key][1]:
                remaining.discard(key)
                consumer.pause([TopicPartition(*key)])
        return False

    def _skip_error(self, msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return False
        if err.code() != KafkaError._PARTITION_EOF:
            raise ReplayError(f"reading {self.topic}: {err.str()}")
        return True

    def _checkpoint(
        self,
        consumer: Consumer,
        producer: Producer | None,
        touched: set[Key],
        position: dict[Key, int],
        ranges: dict[Key, tuple[int, int]],
        *,
        wait: bool,
    ) -> None:
        """Commit progress (with the end bound as metadata) once copies are acknowledged; ``wait``:
        synchronously (errors raise), else asynchronously (errors are logged by :func:`_committed`,
        the next commit carries the same offsets or later ones)."""
        if producer is not None and producer.flush(60) > 0:
            raise ReplayError(f"copies to {self.to_topic} were not acknowledged within 60 s")
        offsets = [
            TopicPartition(t, p, position[(t, p)], metadata=f"{_META}{ranges[(t, p)][1]}") for t, p in touched
        ]
        if wait:
            consumer.commit(offsets=offsets, asynchronous=False)
        else:
            consumer.commit(offsets=offsets, asynchronous=True)

    def _one(
        self, msg: Message, producer: Producer | None, codec: AvroCodec | None, result: ReplayResult
    ) -> None:
        result.processed += 1
        if producer is not None:
            self._copy(msg, producer, result)
            return
        assert self.handlers is not None
        assert codec is not None
        reader = self._reader_for(codec)
        try:
            spec, envelope = self._route(msg, reader)
            if spec is None:
                result.skipped += 1
                return
            try:
                event = reader.decode(spec.model, msg.value(), None)
            except DecodeError:  # again, for an error naming the record (no coordinates built per record)
                event = reader.decode(spec.model, msg.value(), self._where(msg))
        except (EnvelopeError, DecodeError, ValidationError, UnknownEventTypeError) as exc:
            # History holds what the live consumers dead-lettered long ago: count it, go on.
            where = self._where(msg)
            log.warning("replay %s: skipping undecodable record %s: %s", self.name, where, exc)
            result.undecodable += 1
            return
        try:
            if spec.context or spec.function is None:
                spec.handler(event, MessageContext(msg, envelope))
            else:  # a handler taking the event alone gets no MessageContext built for it
                spec.function(event)
        except Exception as exc:
            raise ReplayError(
                f"{self._where(msg)}: handler failed: {exc!r} (progress saved; run again to resume)"
            ) from exc
        result.delivered += 1

    def _route(
        self, msg: Message, reader: EventReader
    ) -> tuple[HandlerSpec | None, Envelope | EnvelopeHeaders]:
        """The record's handler (None: filtered out by ``types``, or no handler for its type) and
        its envelope: the headers checked as :meth:`Envelope.from_headers` checks them, the model
        built only when a handler reads ``ctx.envelope``."""
        assert self.handlers is not None
        headers = msg.headers()
        envelope: Envelope | EnvelopeHeaders | None = EnvelopeHeaders.read(headers) if headers else None
        if envelope is None:  # a foreign record: typed by its writer schema, envelope derived
            where = self._where(msg)
            model = reader.model_for(msg.value(), where)
            ts_type, ts = msg.timestamp()
            envelope = Envelope.derived(
                model.event_type(),
                where.topic,
                msg.partition() or 0,
                msg.offset() or 0,
                ts if ts_type else None,
            )
        if self.types and envelope.event_type not in self.types:
            return None, envelope
        return self.handlers.lookup(envelope.event_type), envelope

    @staticmethod
    def _where(msg: Message) -> RecordCoordinates:
        return RecordCoordinates(msg.topic() or "", msg.partition(), msg.offset())

    def _copy(self, msg: Message, producer: Producer, result: ReplayResult) -> None:
        pairs = header_pairs(msg)
        if self.types and event_type_header(pairs) not in self.types:  # copies: by ce_type only
            result.skipped += 1
            return
        producer.produce(
            self.to_topic or "",
            value=msg.value(),
            key=msg.key(),
            headers=[
                *pairs,
                ("evstream.replay.source", f"{msg.topic()}/{msg.partition()}/{msg.offset()}".encode()),
            ],
        )
        producer.poll(0)
        result.delivered += 1

    def _reader_for(self, codec: AvroCodec) -> EventReader:
        if self._reader is None or self._reader.codec is not codec:
            assert self.handlers is not None
            self._reader = EventReader(codec, known_models(self.handlers, self.catalog))
        return self._reader
