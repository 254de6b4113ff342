"""The worker's producer and its two ways of committing: at-least-once and exactly-once.

A commit makes one commit interval durable, in this order:

- **at_least_once**: (1) the producer is flushed: every derived event, forward and dead letter
  of the interval is acknowledged; (2) the tables' pending rows are written to their changelogs
  and acknowledged; (3) the stores apply them (with the changelog offsets they reach); (4) the
  consumed offsets are committed. A crash anywhere re-reads the interval: derived events are
  re-sent with the same ids, and the rows' origin offsets make their updates no-ops.
- **exactly_once**: everything the interval produced, its changelog rows and its consumed offsets
  (``send_offsets_to_transaction`` with the consumer's group metadata, KIP-447) are one Kafka
  transaction; the stores apply the rows once it committed. An abort (or a crash) leaves nothing
  visible to ``read_committed`` readers and re-reads the interval from the committed offsets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from evstream.errors import DeliveryFailedError, EvstreamError
from evstream.security import topic_write_error
from evstream.streams.state.records import encode_key
from evstream.streams.state.tables import TableState

__all__ = ["Committer", "ProducerOutputs", "TransactionAborted"]

log = logging.getLogger("evstream.streams")

Headers = list[tuple[str, bytes]]


class TransactionAborted(EvstreamError):
    """An exactly-once commit was aborted: the interval's state is dropped and its records re-read."""


class ProducerOutputs:
    """The worker's one producer: derived events, forwards, dead letters and changelog rows."""

    def __init__(self, conf: dict[str, Any], *, transactional: bool, timeout_s: float) -> None:
        self.producer = Producer(conf)
        self.transactional = transactional
        self.timeout_s = timeout_s
        self.in_transaction = False
        self.errors: list[BaseException] = []
        self.produced = 0

    def start(self) -> None:
        if self.transactional:
            self.producer.init_transactions(self.timeout_s)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            topic = msg.topic() or "?"
            typed = topic_write_error(err, topic=topic)
            self.errors.append(typed or DeliveryFailedError(f"{topic}: {err.str()}"))

    def _begin(self) -> None:
        if self.transactional and not self.in_transaction:
            self.producer.begin_transaction()
            self.in_transaction = True

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        *,
        partition: int | None = None,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        self._begin()
        callback = on_delivery or self._delivered
        pairs: Any = headers
        while True:
            try:
                if partition is None:
                    self.producer.produce(topic, value, key, headers=pairs, on_delivery=callback)
                else:
                    self.producer.produce(topic, value, key, partition, headers=pairs, on_delivery=callback)
                break
            except BufferError:  # the local queue is full: serve delivery reports, then again
                self.producer.poll(0.05)
        self.produced += 1
        if self.produced % 1000 == 0:
            self.producer.poll(0)

    def flush(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while self.producer.flush(1.0) > 0:
            if time.monotonic() > deadline:
                raise DeliveryFailedError(f"records not acknowledged within {self.timeout_s:g} s")
        self.raise_errors()

    def raise_errors(self) -> None:
        if self.errors:
            first, count = self.errors[0], len(self.errors)
            self.errors = []
            raise DeliveryFailedError(f"{count} record(s) of this commit interval failed: {first}") from first


class Committer:
    """Commits an interval (see the module doc): ``tables``' pending rows, ``positions`` (the next
    offset per consumed partition) and what ``outputs`` produced."""

    def __init__(self, outputs: ProducerOutputs, consumer: Any, tables: list[TableState[Any]]) -> None:
        self.outputs = outputs
        self.consumer = consumer
        self.tables = tables
        self.positions: dict[tuple[str, int], int] = {}
        self.last = time.monotonic()
        self.commits = 0

    def due(self, interval_s: float) -> bool:
        return time.monotonic() - self.last >= interval_s

    def _changelogs(
        self,
    ) -> tuple[list[tuple[TableState[Any], int, dict[str, Any]]], dict[tuple[str, int], int]]:
        written: dict[tuple[str, int], int] = {}

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self.outputs._delivered(err, msg)
                return
            where = (msg.topic() or "", msg.partition() or 0)
            written[where] = max(written.get(where, -1), msg.offset() or 0)

        pending: list[tuple[TableState[Any], int, dict[str, Any]]] = []
        for table in self.tables:
            for partition, rows in table.take_dirty().items():
                if not rows:
                    continue
                pending.append((table, partition, rows))
                for key, row in rows.items():
                    value = None if row is None else row.to_bytes()
                    self.outputs.produce(
                        table.changelog,
                        encode_key(key),
                        value,
                        [],
                        partition=partition,
                        on_delivery=delivered,
                    )
        return pending, written

    @staticmethod
    def _apply(
        pending: list[tuple[TableState[Any], int, dict[str, Any]]], written: dict[tuple[str, int], int]
    ) -> None:
        for table, partition, rows in pending:
            store = table.stores.get(partition)
            if store is not None:
                store.apply(rows, written.get((table.changelog, partition), -1) + 1)

    def offsets(self) -> list[TopicPartition]:
        return [TopicPartition(t, p, o) for (t, p), o in self.positions.items()]

    def commit(self) -> None:
        """Make the interval durable (see the module doc); raises when it could not."""
        self.last = time.monotonic()
        if self.outputs.transactional:
            self._commit_transaction()
        else:
            self._commit_at_least_once()
        self.commits += 1

    def _commit_at_least_once(self) -> None:
        self.outputs.flush()  # derived events first: the state may only claim what was delivered
        pending, written = self._changelogs()
        if pending:
            self.outputs.flush()
        self._apply(pending, written)
        offsets = self.offsets()
        if offsets:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:  # e.g. a rebalance took the partitions: the owner re-reads
                log.warning("offsets not committed (%s): their records will be read again", exc.args[0])

    def _commit_transaction(self) -> None:
        out = self.outputs
        offsets = self.offsets()
        pending, written = self._changelogs()
        if not out.in_transaction and not offsets:
            return
        out._begin()
        producer = out.producer
        try:
            if offsets:
                producer.send_offsets_to_transaction(
                    offsets, self.consumer.consumer_group_metadata(), out.timeout_s
                )
            self._commit_retrying()
            out.in_transaction = False
            out.raise_errors()
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.fatal():
                raise
            self.abort(f"commit failed: {error.str()}")
            raise TransactionAborted(f"the transaction was aborted: {error.str()}") from exc
        except DeliveryFailedError as exc:
            self.abort(str(exc))
            raise TransactionAborted(f"the transaction was aborted: {exc}") from exc
        self._apply(pending, written)

    def _commit_retrying(self) -> None:
        deadline = time.monotonic() + self.outputs.timeout_s
        while True:
            try:
                self.outputs.producer.commit_transaction(max(1.0, deadline - time.monotonic()))
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.retriable() and time.monotonic() < deadline:
                    continue
                raise

    def abort(self, why: str) -> None:
        """Abort the open transaction (exactly_once) and drop the interval's state."""
        log.warning("aborting the transaction (%s): its records will be read again", why)
        out = self.outputs
        if out.in_transaction:
            out.in_transaction = False
            try:
                out.producer.abort_transaction(out.timeout_s)
            except KafkaException as exc:  # fatal (fenced): the runner renews the producer
                log.warning("abort_transaction: %s", exc.args[0].str())
                if exc.args[0].fatal():
                    raise
        out.errors = []
        self.positions.clear()  # the interval's offsets go with its state: never committed without it
        for table in self.tables:
            table.discard()
