"""The worker's loop: one librdkafka consumer, one producer, the processor, commits, rebalances.

::

    consume a batch ──► Processor.process (handlers, tables, publishes) ──► every commit interval:
    Committer.commit (at-least-once or one transaction) ──► again, until SIGTERM

**Assignment.** The group uses the range assignor (classic protocol, or KIP-848's server-side
``range`` with ``group_protocol="consumer"``): partition ``p`` of every co-partitioned topic goes
to one worker, so a table partition and the events that read and write it meet. When partitions
arrive, the table partitions their handlers declare are recovered before their first record; when
they leave, the interval is committed first (their state and offsets with it). A partition lost
without a revoke (the worker was fenced or timed out) drops the uncommitted interval and re-reads
from the committed offsets.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from evstream.security import security_error
from evstream.settings import librdkafka_config
from evstream.streams.engine.commits import Committer, ProducerOutputs, TransactionAborted
from evstream.streams.engine.recovery import Recovery, create_topics
from evstream.streams.engine.refusals import group_refused, topic_refused
from evstream.streams.metrics import STREAM_LAG

if TYPE_CHECKING:
    from threading import Event

    from evstream.errors import KafkaSecurityError
    from evstream.streams.app import App
    from evstream.streams.state.tables import TableState

__all__ = ["StreamRunner"]

log = logging.getLogger("evstream.streams")


class StreamRunner:
    """Runs an :class:`~evstream.streams.App` until ``stop`` is set (see the module doc)."""

    def __init__(self, app: App, *, data_dir: Path, lag_interval_s: float = 5.0) -> None:
        self.app = app
        self.settings = app.settings
        self.data_dir = data_dir
        self.lag_interval_s = lag_interval_s
        self.joined = False
        self.assigned: set[tuple[str, int]] = set()
        self.refused: KafkaSecurityError | None = None
        self._fatal: KafkaError | None = None  # a fatal producer error met inside a rebalance callback
        self._consumer: Consumer | None = None
        self._outputs: ProducerOutputs | None = None
        self._committer: Committer | None = None
        self._recovery: Recovery | None = None
        self._lag_labels: set[tuple[str, str]] = set()
        self._loop = asyncio.new_event_loop()

    # -- readiness ----------------------------------------------------------------------------------

    def readiness(self) -> str | None:
        """None when the worker owns partitions and their tables are recovered."""
        if not self.joined:
            return "joining the consumer group"
        if self._recovery is not None and self._recovery.active:
            return "recovering tables from their changelogs"
        if not self.assigned:
            return "waiting for partition assignment"
        return None

    # -- set-up -------------------------------------------------------------------------------------

    def _wanted_topics(self) -> dict[str, tuple[int, dict[str, str]]]:
        app, settings = self.app, self.settings
        wanted: dict[str, tuple[int, dict[str, str]]] = {}
        for topic in app.topics.values():
            if topic.internal:
                wanted[topic.name] = (topic.partitions or settings.partitions, {})
        for table in app.tables:
            wanted[table.changelog] = (table.partitions, {"cleanup.policy": "compact"})
        wanted[app.processor.dead_letter_topic] = (1, {})
        return wanted

    def _consumer_conf(self, base: dict[str, Any]) -> dict[str, Any]:
        settings = self.settings
        conf = {
            **base,
            "group.id": self.app.app_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "error_cb": self._on_error,
        }
        if settings.group_protocol == "consumer":
            conf |= {"group.protocol": "consumer", "group.remote.assignor": "range"}
        else:
            conf |= {
                "partition.assignment.strategy": "range",
                "session.timeout.ms": int(settings.session_timeout_s * 1000),
                "heartbeat.interval.ms": int(min(3.0, settings.session_timeout_s / 3) * 1000),
            }
        return conf

    def _producer_conf(self, base: dict[str, Any]) -> dict[str, Any]:
        settings = self.settings
        conf = {
            **base,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": settings.producer_linger_ms,
            "compression.type": "lz4",
            "partitioner": "murmur2_random",
        }
        if settings.processing_guarantee == "exactly_once":
            conf["transactional.id"] = f"{self.app.app_id}-{uuid.uuid4().hex[:12]}"
            conf["transaction.timeout.ms"] = int(settings.transaction_timeout_s * 1000)
        return conf

    def _on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
            found: KafkaSecurityError | None = group_refused(self.app.app_id)
        elif error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            return  # named by the consume error that follows
        else:
            found = security_error(error, group=self.app.app_id)
        if found is not None and self.refused is None:
            self.refused = found

    def _refused(self, error: KafkaError, topic: str | None) -> KafkaSecurityError | None:
        """The typed one-line error of a refused consume (which ACL: READ, or DESCRIBE when even
        the topic's metadata is refused)."""
        code = error.code()
        if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
            return group_refused(self.app.app_id)
        if code == KafkaError.TOPIC_AUTHORIZATION_FAILED and topic:
            admin = AdminClient(librdkafka_config(self.app.kafka))
            found = admin.list_topics(topic, timeout=10).topics.get(topic)
            described = found is not None and found.error is None
            return topic_refused(topic, "READ" if described else "DESCRIBE")
        return security_error(error, topic=topic, group=self.app.app_id)

    # -- rebalances ---------------------------------------------------------------------------------

    def _needed(self, partitions: set[tuple[str, int]]) -> list[tuple[TableState[Any], int]]:
        needed: dict[tuple[int, int], tuple[TableState[Any], int]] = {}
        for topic, partition in partitions:
            for route in self.app.processor.by_topic.get(topic, []):
                for table in route.tables():
                    needed[(id(table), partition)] = (table, partition)
        return list(needed.values())

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.joined = True
        incremental = self.settings.group_protocol == "consumer"  # KIP-848: incremental; classic range: eager
        arriving = {(tp.topic, tp.partition) for tp in partitions}
        self.assigned = self.assigned | arriving if incremental else arriving
        keep = self._needed(self.assigned)
        if not incremental:  # eager: the whole assignment is known now; close what left
            owned = {(id(t), p) for t, p in keep}
            for table in self.app.tables:
                for partition in list(table.stores):
                    if (id(table), partition) not in owned:
                        table.close_partition(partition)
        assert self._recovery is not None
        self._recovery.recover(self._needed(arriving))
        log.info("assigned %s", sorted(arriving))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        leaving = {(tp.topic, tp.partition) for tp in partitions}
        try:
            self._commit()
        except TransactionAborted:
            pass  # aborted: re-read by the next owner
        except KafkaException as exc:  # fatal (fenced): renewed by the loop once the rebalance is done
            self._fatal = exc.args[0]
        assert self._committer is not None
        for where in leaving:
            self._committer.positions.pop(where, None)
        self.assigned -= leaving
        if self.settings.group_protocol == "consumer":
            owned = {(id(t), p) for t, p in self._needed(self.assigned)}
            for table, partition in self._needed(leaving):
                if (id(table), partition) not in owned:
                    table.close_partition(partition)
        log.info("revoked %s", sorted(leaving))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        leaving = {(tp.topic, tp.partition) for tp in partitions}
        log.warning(
            "partitions lost (no longer in the group): %s; their interval is dropped", sorted(leaving)
        )
        assert self._committer is not None
        self.assigned -= leaving
        for where in leaving:
            self._committer.positions.pop(where, None)
        for table, partition in self._needed(leaving):
            table.close_partition(partition)
        try:
            self._committer.abort("partitions lost")
        except KafkaException as exc:  # fatal (fenced): renewed by the loop
            self._fatal = exc.args[0]
        self._rewind()

    def _rewind(self) -> None:
        """Back to the committed offsets of every owned partition (the interval was dropped)."""
        assert self._consumer is not None
        assert self._committer is not None
        self.app.processor.ready.clear()
        owned = [TopicPartition(t, p) for t, p in sorted(self.assigned)]
        self._committer.positions.clear()
        if not owned:
            return
        for tp in self._consumer.committed(owned, timeout=30):
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            try:
                self._consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
            except KafkaException as exc:
                log.warning("seek %s[%d]: %s", tp.topic, tp.partition, exc.args[0].str())

    # -- the loop -----------------------------------------------------------------------------------

    def _commit(self) -> None:
        assert self._committer is not None
        self._committer.commit()

    def run(self, stop: Event) -> None:
        """Consume, process and commit until ``stop`` is set; raises what stopped it otherwise."""
        app, settings = self.app, self.settings
        base = librdkafka_config(app.kafka)
        admin = AdminClient(base)
        metadata = admin.list_topics(timeout=30).topics

        def partitions_of(name: str) -> int | None:
            found = metadata.get(name)
            return None if found is None or found.error is not None else len(found.partitions)

        app.check_copartitioning(partitions_of)
        create_topics(admin, self._wanted_topics(), settings.replication_factor)
        transactional = settings.processing_guarantee == "exactly_once"
        timeout = max(30.0, settings.transaction_timeout_s) if transactional else 60.0
        self._outputs = outputs = ProducerOutputs(
            self._producer_conf(base), transactional=transactional, timeout_s=timeout
        )
        outputs.start()
        self._consumer = consumer = Consumer(self._consumer_conf(base))
        self._committer = committer = Committer(outputs, consumer, list(app.tables))
        self._recovery = Recovery(base, settings.store, self.data_dir)
        app.processor.outputs = outputs
        topics = sorted(app.processor.by_topic)
        consumer.subscribe(
            topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info("stream app %s: subscribed to %s (%s)", app.app_id, topics, settings.processing_guarantee)
        try:
            self._loop_until(stop, consumer, committer)
            self._commit()
        except BaseException:
            if transactional and outputs.in_transaction:
                committer.abort("the worker stopped on an error")
            raise
        finally:
            self._close()

    def _loop_until(self, stop: Event, consumer: Consumer, committer: Committer) -> None:
        settings = self.settings
        next_tick = next_lag = time.monotonic() + 1.0
        while not stop.is_set():
            if self.refused is not None:
                raise self.refused
            now = time.monotonic()
            try:
                self._step(consumer, committer)
                if self._fatal is not None:
                    error, self._fatal = self._fatal, None
                    raise KafkaException(error)
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + 1.0
                    self._loop.run_until_complete(self.app.processor.tick())
                if committer.due(settings.commit_interval_s):
                    self._commit()
            except TransactionAborted:
                self._rewind()
            except KafkaException as exc:
                if not (self._outputs and self._outputs.transactional):
                    raise
                self._recover_transaction(exc.args[0])
            if now >= next_lag:
                next_lag = now + self.lag_interval_s
                self._update_lag(consumer, committer.positions)

    def _step(self, consumer: Consumer, committer: Committer) -> None:
        """One batch: consume, process, note the positions."""
        # what is there now, without waiting for a full batch; when nothing is, wait for one record
        records = consumer.consume(self.settings.batch_size, 0) or consumer.consume(1, 0.1)
        good = []
        for msg in records:
            err = msg.error()
            if err is None:
                good.append(msg)
            elif err.code() != KafkaError._PARTITION_EOF:
                refused = self._refused(err, msg.topic())
                if refused is not None:
                    raise refused
                log.warning("consumer: %s", err.str())
        if good:
            self._loop.run_until_complete(self.app.processor.process(good))
            positions = committer.positions
            for msg in good:
                positions[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1

    def _recover_transaction(self, error: KafkaError) -> None:
        """The transactional producer failed mid-interval: abort (an abortable error) or renew the
        producer (a fatal one); either way the interval is re-read from the committed offsets."""
        assert self._committer is not None
        if not error.fatal():
            try:
                self._committer.abort(f"the transaction failed: {error.str()}")
            except KafkaException as exc:
                if not exc.args[0].fatal():
                    raise
                error = exc.args[0]
            else:
                self._rewind()
                return
        self._renew_producer(error)

    def _renew_producer(self, error: KafkaError) -> None:
        """A fatal error of the transactional producer (fenced: the broker aborted its transaction
        after the transaction timeout, or a newer instance took over): nothing it wrote since the
        last commit is visible. A new producer takes over from the committed offsets."""
        assert self._outputs is not None
        assert self._committer is not None
        log.warning("the transactional producer hit a fatal error (%s): a new one takes over", error.str())
        old = self._outputs
        old.in_transaction, old.errors = False, []
        for table in self.app.tables:
            table.discard()
        base = librdkafka_config(self.app.kafka)
        self._outputs = outputs = ProducerOutputs(
            self._producer_conf(base), transactional=True, timeout_s=old.timeout_s
        )
        outputs.start()
        self._committer.outputs = outputs
        self.app.processor.outputs = outputs
        self._rewind()

    def _update_lag(self, consumer: Consumer, positions: dict[tuple[str, int], int]) -> None:
        labels: set[tuple[str, str]] = set()
        for topic, partition in sorted(self.assigned):
            tp = TopicPartition(topic, partition)
            try:
                low, high = consumer.get_watermark_offsets(tp, cached=True)
                if high < 0:
                    low, high = consumer.get_watermark_offsets(tp, timeout=2)
            except KafkaException:
                continue
            position = positions.get((topic, partition))
            if position is None:
                found = consumer.position([tp])[0].offset
                position = found if found >= 0 else low
            # a transaction's commit marker is never delivered: 1 left behind one is none
            lag = max(0, high - position)
            if lag == 1 and self.settings.processing_guarantee == "exactly_once":
                lag = 0
            STREAM_LAG.labels(topic, str(partition)).set(lag)
            labels.add((topic, str(partition)))
        for gone in self._lag_labels - labels:
            STREAM_LAG.remove(*gone)
        self._lag_labels = labels

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()  # leaves the group (revoke: the last commit)
            except (KafkaException, RuntimeError) as exc:
                log.warning("consumer close: %s", exc)
        if self._outputs is not None:
            try:
                self._outputs.producer.flush(10)
            except (KafkaException, SystemError) as exc:  # a fatal producer has nothing to flush
                log.warning("producer flush at close: %s", exc)
        if self._recovery is not None:
            self._recovery.close()
        for table in self.app.tables:
            for partition in list(table.stores):
                table.close_partition(partition)
        self._loop.close()
