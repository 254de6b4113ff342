"""The consumer-group runner: poll, hand records to the dispatcher, store and commit offsets.

At-least-once: an offset is stored only after its record was handled, skipped by policy, or
safely written to a retry or dead-letter topic (acknowledged first), and stored offsets are
committed after the first batch that finished a record, then every ``commit_interval_s`` or every
``commit_every_records`` finished records (whichever comes first), on partition revocation and on
shutdown. A crash therefore replays at most the records since the last commit (a consumer that
crashes in a loop still moves forward by at least its first batch each time); a :class:`DedupeStore` makes
those replays no-ops. A record that must wait (a retry-topic record not yet due, or an ordered
handler's block-and-retry) pauses only its own partition: the others keep flowing.

The runner creates no topics: the source, retry and dead-letter topics are declared as code, and
:meth:`ConsumerRunner.run` checks they exist before it joins the group
(:class:`evstream.errors.MissingTopicsError` names the missing ones and the command that declares them).
The group's redrive topics (``<topic>.<group>.redrive``, where ``evstream dlq redrive`` sends its
dead letters back) are read too when they exist, their records dispatched like source records.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from evstream.consumers.dedupe import DedupeStore
from evstream.consumers.dispatch import Dispatcher, RunStats
from evstream.consumers.handlers import Handlers
from evstream.consumers.metrics import LAG
from evstream.consumers.routing import FailureRouter, KafkaFailureWriter, RetryTopics
from evstream.consumers.settings import ConsumerSettings
from evstream.errors import EvstreamError
from evstream.schemas import AvroCodec, Catalog, RegistrySchemaStore, SchemaStore
from evstream.security import probe, security_error
from evstream.settings import KafkaSettings, RegistrySettings, librdkafka_config

__all__ = ["ConsumerRunner", "RunStats"]

log = logging.getLogger("evstream.consumer")
Partition = tuple[str, int]
_GROUP_MOVED_ON = {
    KafkaError._ASSIGNMENT_LOST,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.FENCED_INSTANCE_ID,
}


class ConsumerRunner:
    """Run ``handlers`` in consumer group ``group_id``. Constructing it does no I/O.

    Records without a ``ce_type`` header (foreign producers) are dispatched on their writer
    schema's record name among the handled models and ``catalog``'s: a catalog model without a
    handler follows ``unknown_event_policy``, a record name no model has is dead-lettered.
    """

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
        catalog: Catalog | None = None,
    ) -> None:
        self.group_id = group_id
        self.handlers = handlers
        self.topics = topics or handlers.topics
        self._kafka = kafka
        self._registry = registry
        self.settings = settings or ConsumerSettings()
        self._store = schema_store
        self.dedupe = dedupe
        self.catalog = catalog  # records without ce_type: record names of models beyond the handled
        self.stats = RunStats()
        self._commit_error: KafkaException | None = None  # an async commit's: raised by the next
        self.retry = RetryTopics(group_id, tuple(self.topics), self.settings.retry_topic_delays_s)
        self.assignment: set[Partition] = set()  # what this member owns right now
        self.lag: dict[Partition, int] = {}  # from librdkafka statistics
        self._stop = threading.Event()
        self._consumer: Consumer | None = None
        self._dispatcher: Dispatcher | None = None
        self._held: dict[Partition, float] = {}  # paused partition -> epoch time to resume
        self._watchdog: threading.Timer | None = None

    def stop(self) -> None:
        """Ask :meth:`run` to finish the record in hand, commit and return (thread- and signal-safe)."""
        self._stop.set()

    # ------------------------------------------------------------------ main loop

    def run(self, *, install_signal_handlers: bool = False, until_idle_s: float | None = None) -> RunStats:
        """Consume until :meth:`stop` (or SIGTERM/SIGINT when ``install_signal_handlers``).

        ``until_idle_s`` also returns after that long without a record (handy for batch jobs
        and tests). Offsets are committed before returning. Raises
        :class:`~evstream.errors.MissingTopicsError` before consuming anything when a retry or
        dead-letter topic of the group does not exist.
        """
        if not self.topics:
            raise EvstreamError("no topics: register handlers or pass topics=")
        kafka = self._kafka or KafkaSettings()
        if kafka.security_protocol != "PLAINTEXT":  # a refused login or untrusted broker: now, not in 30 s
            refused = probe(kafka)
            if refused is not None:
                raise refused
        conf = librdkafka_config(kafka)
        # the group's redrive topics (<topic>.<group>.redrive) are read like its sources, when declared
        redrive = self.retry.check(AdminClient(conf), self.settings.dead_letter_suffix)
        registry_client = None
        store = self._store
        if store is None:
            registry_client = SchemaRegistryClient((self._registry or RegistrySettings()).client_config())
            store = RegistrySchemaStore(registry_client)
        producer = Producer(
            {
                **conf,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 0,
                "partitioner": "murmur2_random",
            }
        )
        loop = asyncio.new_event_loop()
        self._dispatcher = Dispatcher(
            self.group_id,
            self.handlers,
            self.settings,
            AvroCodec(store),
            FailureRouter(KafkaFailureWriter(producer), self.retry, self.settings.dead_letter_suffix),
            self.dedupe,
            self.stats,
            loop,
            catalog=self.catalog,
        )
        previous = self._install_signals() if install_signal_handlers else {}
        consumer = self._consumer = Consumer(
            {
                **conf,
                **self.settings.librdkafka(self.group_id),
                "stats_cb": self._on_stats,
                "on_commit": self._on_commit,
            }
        )
        consumer.subscribe(
            [*self.topics, *redrive, *self.retry.all()],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        if self.settings.gc_freeze:  # what start-up built lives as long as the run: out of GC passes
            gc.collect()
            gc.freeze()
        try:
            self._loop(consumer, until_idle_s)
        finally:
            try:
                self._commit()  # everything stored was handled: safe to commit even after an error
            finally:
                consumer.close()
                self._consumer = None
                producer.flush(10)
                loop.close()
                if registry_client is not None:
                    registry_client.close()
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
                if self._watchdog is not None:  # stopped in time: no forced exit later
                    self._watchdog.cancel()
                    self._watchdog = None
        return self.stats

    def _loop(self, consumer: Consumer, until_idle_s: float | None) -> None:
        last_commit = last_record = time.monotonic()
        every = self.settings.commit_every_records
        committed_once = False
        finished = 0  # records finished (offsets stored) since the last commit
        while not self._stop.is_set():
            batch = self._fetch(consumer)
            self._resume_due(consumer)
            finished += self._handle_batch(consumer, batch)
            if batch:
                last_record = time.monotonic()
            elif (
                until_idle_s is not None and not self._held and time.monotonic() - last_record > until_idle_s
            ):
                break
            if (
                (finished and not committed_once)
                or (every and finished >= every)
                or time.monotonic() - last_commit > self.settings.commit_interval_s
            ):
                self._commit(asynchronous=True)
                committed_once = committed_once or finished > 0
                finished = 0
                last_commit = time.monotonic()

    def _fetch(self, consumer: Consumer) -> list[Message]:
        """Up to ``batch_size`` records, never waiting for records that are not there.

        ``consume(n, timeout)`` returns only when it has ``n`` records or the timeout passed, so at
        a low rate a plain ``consume(500, 0.5)`` holds records in hand for up to half a second.
        Instead: what is already fetched (no wait); when nothing is, wait up to the poll timeout for
        *one* record and take what else has arrived with it. ``batch_wait_s`` > 0 trades latency
        for larger batches: it waits that long for the batch to fill once a record is in hand.
        """
        size, fill = self.settings.batch_size, self.settings.batch_wait_s
        batch = consumer.consume(size, 0)
        if not batch:
            batch = consumer.consume(1, self._poll_timeout())
            if not batch or size == 1:
                return batch
        if fill > 0 and len(batch) < size:
            batch += consumer.consume(size - len(batch), fill)
        elif len(batch) == 1:
            batch += consumer.consume(size - 1, 0)
        return batch

    def _handle_batch(self, consumer: Consumer, batch: list[Message]) -> int:
        """Dispatch a batch; store the offset after the last finished record of each partition.

        Returns how many records were finished (their offsets stored)."""
        assert self._dispatcher is not None
        done: dict[Partition, int] = {}
        finished = 0
        deadline = time.monotonic() + self.settings.batch_deadline
        try:
            for index, msg in enumerate(batch):
                if time.monotonic() > deadline:  # slow handlers: poll again before Kafka drops us
                    self._rewind(consumer, batch[index:])
                    break
                err = msg.error()
                if err is not None:
                    security = security_error(
                        err,
                        topic=msg.topic(),
                        group=self.group_id,
                        user=(self._kafka or KafkaSettings()).sasl_username,
                    )
                    if security is not None:  # login, TLS or a missing ACL: stop here, commit nothing past it
                        raise security
                    if err.fatal():
                        raise EvstreamError(f"fatal consumer error: {err.str()}")
                    continue
                tp = (msg.topic() or "", msg.partition() or 0)
                if tp in self._held or tp not in self.assignment:
                    continue  # waiting (fetched again after the seek), or revoked: the new owner has it
                due = self._dispatcher.process(msg)
                if due is None:
                    done[tp] = (msg.offset() or 0) + 1
                    finished += 1
                else:
                    self._hold(consumer, msg, due)
                if self._stop.is_set():
                    break  # the rest is redelivered: nothing after this record is stored
            self._dispatcher.flush_batches()  # batch handlers run before any of their offsets is stored
        finally:
            self._before_unfinished(done)
            if done:
                self._store_offsets(consumer, done)
            self._dispatcher.flush_metrics()
        return finished

    def _before_unfinished(self, done: dict[Partition, int]) -> None:
        """Store no offset past a record a batch handler did not get to run (an error stopped
        the batch): it is redelivered."""
        assert self._dispatcher is not None
        for tp, first in self._dispatcher.unfinished().items():
            if done.get(tp, -1) > first:
                done[tp] = first

    def _store_offsets(self, consumer: Consumer, done: dict[Partition, int]) -> None:
        owned = {tp: offset for tp, offset in done.items() if tp in self.assignment}
        if len(owned) < len(done):  # revoked or lost meanwhile: the new owner handles them again
            log.warning(
                "not storing offsets of partitions no longer owned: %s", sorted(set(done) - set(owned))
            )
        if owned:
            consumer.store_offsets(offsets=[TopicPartition(t, p, o) for (t, p), o in owned.items()])

    # ------------------------------------------------------------------ pause / resume

    def _rewind(self, consumer: Consumer, rest: list[Message]) -> None:
        """Seek each partition back to its first record in ``rest``, to be fetched again."""
        first: dict[Partition, int] = {}
        for msg in rest:
            tp = (msg.topic() or "", msg.partition() or 0)
            if msg.error() is None and tp in self.assignment and tp not in self._held and tp not in first:
                first[tp] = msg.offset() or 0
        for (topic, partition), offset in first.items():
            consumer.seek(TopicPartition(topic, partition, offset))
        self.stats.rewinds += 1

    def _hold(self, consumer: Consumer, msg: Message, due: float) -> None:
        """Pause the record's partition and rewind to it until ``due`` (epoch seconds)."""
        tp = TopicPartition(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
        consumer.pause([tp])
        consumer.seek(tp)
        self._held[(tp.topic, tp.partition)] = due

    def _resume_due(self, consumer: Consumer) -> None:
        now = time.time()
        due = [tp for tp, at in self._held.items() if at <= now]
        if due:
            consumer.resume([TopicPartition(t, p) for t, p in due])
            for tp in due:
                del self._held[tp]

    def _poll_timeout(self) -> float:
        if not self._held:
            return self.settings.poll_timeout_s
        return max(0.005, min(self.settings.poll_timeout_s, min(self._held.values()) - time.time()))

    # ------------------------------------------------------------------ group membership

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assignment |= {(tp.topic, tp.partition) for tp in partitions}
        # librdkafka keeps a partition's pause flag across unassign/assign: a partition held when
        # it was taken away would otherwise stay paused forever when it comes back.
        consumer.resume(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit what was handled before the partitions move to another member."""
        self._commit()
        self._release(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions taken away without a chance to commit (session expired): just forget them."""
        self.stats.lost += len(partitions)
        log.warning("lost %d partition(s) without a commit: %s", len(partitions), partitions)
        self._release(partitions)

    def _release(self, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self.assignment -= gone
        for tp in gone:
            self._held.pop(tp, None)
            if self.lag.pop(tp, None) is not None:
                LAG.remove(tp[0], str(tp[1]), self.group_id)
        if self._dispatcher is not None:
            self._dispatcher.forget(gone)

    def _commit(self, *, asynchronous: bool = False) -> None:
        """Commit the stored offsets (of handled records only).

        The periodic commits of the loop are asynchronous, so a record never waits behind a
        commit's round trip to the group coordinator (the p99 latency at 5k events/s); their
        outcome arrives in :meth:`_on_commit`. On revocation and shutdown the commit is
        synchronous: it must be done before the partitions move or the process exits.
        """
        if self._consumer is None:
            return
        if self._commit_error is not None:
            error, self._commit_error = self._commit_error, None
            raise error
        try:
            if asynchronous:
                self._consumer.commit(asynchronous=True)
            else:
                self._consumer.commit(asynchronous=False)
                self.stats.commits += 1
        except KafkaException as exc:
            if not self._commit_failed(exc.args[0]):
                raise

    def _commit_failed(self, err: KafkaError) -> bool:
        """True when a failed commit can be let go (the next one carries the offsets)."""
        if err.code() == KafkaError._NO_OFFSET:
            return True  # nothing stored since the last commit
        if err.code() in _GROUP_MOVED_ON or err.retriable():
            # The group rebalanced under us (the records are redelivered to their new owner),
            # or the coordinator is briefly unavailable (the next commit carries the offsets).
            log.warning("commit not done, continuing: %s", err.str())
            return True
        return False

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """Outcome of an asynchronous commit (served by consume, on the loop's thread); an error
        that cannot be let go is raised by the next commit."""
        if err is None:
            failed = next((tp.error for tp in partitions if tp.error is not None), None)
            if failed is None:
                self.stats.commits += 1
                return
            err = failed
        if not self._commit_failed(err):
            self._commit_error = KafkaException(err)

    def _on_stats(self, raw: str) -> None:
        """librdkafka statistics: refresh the lag-per-partition gauge of owned partitions."""
        stats = json.loads(raw)
        for topic, data in stats.get("topics", {}).items():
            for partition, p in data.get("partitions", {}).items():
                tp = (topic, int(partition))
                lag = p.get("consumer_lag", -1)
                if tp in self.assignment and lag >= 0:
                    self.lag[tp] = lag
                    LAG.labels(topic, partition, self.group_id).set(lag)

    # ------------------------------------------------------------------ signals

    def _install_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)
        return previous

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._watchdog = threading.Timer(self.settings.shutdown_timeout_s, self._overdue)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _overdue(self) -> None:
        log.error(
            "graceful shutdown took longer than %.0fs (a handler is stuck); exiting without the final commit",
            self.settings.shutdown_timeout_s,
        )
        os._exit(70)
