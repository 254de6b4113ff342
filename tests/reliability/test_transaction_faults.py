"""Transactional batches while the transaction coordinator and a partition leader are SIGKILLed.

A private 3-node cluster (RF 3, min ISR 2). One transactional EventProducer publishes batches of
50 events, every tenth aborted on purpose; meanwhile the node coordinating its transactional id
(the leader of its ``__transaction_state`` partition) is SIGKILLed, then the leader of a data
partition, then the coordinator again, each restarted before the next. Read back with
read_committed, every batch is all-or-nothing: a committed one has its 50 events once each, an
aborted or failed one none, an indeterminate one 0 or 50; and the producer survives (batches
commit after the last kill, it is healthy at the end). Marked `long`: `make reliability`.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from evstream import (
    DeliveryFailedError,
    DeliveryIndeterminateError,
    KafkaSettings,
    ProducerFatalError,
    PublishError,
    RegistrySettings,
)
from evstream.producers import DeliveryFuture, EventProducer, ProducerSettings
from evstream.stack import LocalStack
from tests.conftest import Endpoints
from tests.factories import mixed_events
from tests.helpers import wait_until
from tests.reliability.faults import full_isr, leader_of, replicated_topic, start_again

pytestmark = [pytest.mark.long, pytest.mark.slow, pytest.mark.reliability]

BATCH = 50
PARTITIONS = 6
TXN_STATE = "__transaction_state"


class DeliberateAbort(Exception):
    """Raised inside a transaction block to abort it."""


def coordinator_partition(transactional_id: str, partitions: int) -> int:
    """Kafka's ``partitionFor``: ``Utils.abs(transactionalId.hashCode) % partitions``."""
    h = 0
    for ch in transactional_id:
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    signed = h - (1 << 32) if h >= 1 << 31 else h
    return 0 if signed == -(1 << 31) else abs(signed) % partitions


def coordinator(admin: AdminClient, transactional_id: str) -> int:
    partitions = wait_until(
        lambda: len(admin.list_topics(TXN_STATE, timeout=5).topics[TXN_STATE].partitions),
        timeout=60,
        what=f"{TXN_STATE} partitions",
    )
    return leader_of(admin, TXN_STATE, coordinator_partition(transactional_id, partitions))


def settled(admin: AdminClient, topic: str) -> bool:
    return full_isr(admin, topic) and full_isr(admin, TXN_STATE)


def kill_and_restart(stack: LocalStack, admin: AdminClient, topic: str, node: int) -> None:
    stack.stop_node(node, sig=signal.SIGKILL)
    start_again(stack, node)
    wait_until(lambda: settled(admin, topic), timeout=180, what="full ISR again", interval=0.5)


def batch_outcome(futures: list[DeliveryFuture]) -> str:
    errors = [f.exception(timeout=120) for f in futures]
    if all(e is None for e in errors):
        return "committed"
    if any(isinstance(e, DeliveryIndeterminateError) for e in errors):
        return "indeterminate"
    assert all(isinstance(e, DeliveryFailedError) for e in errors), errors
    return "failed"


def read_committed(bootstrap: str, topic: str) -> Counter[tuple[int, int]]:
    """(batch, index) -> times read, reading read_committed up to an end marker per partition
    written after every transaction ended (visible only once no transaction is left open)."""
    marker = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for p in range(PARTITIONS):
        marker.produce(topic, value=b"end", partition=p, headers=[("end", b"1")])
    assert marker.flush(60) == 0
    del marker
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"verify-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    seen: Counter[tuple[int, int]] = Counter()
    ended: set[int] = set()
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])

        def drain() -> bool:
            for m in consumer.consume(2000, timeout=0.5):
                if m.error() is not None:
                    continue
                headers: dict[str, bytes] = dict(m.headers() or [])  # type: ignore[arg-type]
                if "end" in headers:
                    ended.add(m.partition() or 0)
                else:
                    seen[(int(headers["batch"]), int(headers["idx"]))] += 1
            return len(ended) == PARTITIONS

        wait_until(drain, timeout=300, what="the end marker of every partition (an open transaction?)")
    finally:
        consumer.close()
    return seen


def test_transactions_stay_all_or_nothing_under_coordinator_and_leader_kills(
    trio: LocalStack, endpoints: Endpoints, figures: dict[str, object]
) -> None:
    admin, topic = replicated_topic(trio, "txn-faults", PARTITIONS)
    bootstrap = trio.state().bootstrap_servers
    tid = f"txn-faults-{uuid.uuid4().hex[:8]}"
    outcomes: dict[int, str] = {}
    errors: Counter[str] = Counter()
    kills: list[tuple[str, int, int]] = []  # (what, node, batches before)
    done = threading.Event()
    fault_errors: list[BaseException] = []
    fatal_messages: list[str] = []

    def inject(after: Callable[[int], None]) -> None:
        try:
            for what, at in (("coordinator", 15), ("leader", 45), ("coordinator", 75)):
                after(at)
                node = coordinator(admin, tid) if what == "coordinator" else leader_of(admin, topic, 0)
                kills.append((what, node, len(outcomes)))
                kill_and_restart(trio, admin, topic, node)
        except BaseException as exc:  # reported by the test, not as an unhandled thread exception
            fault_errors.append(exc)
        finally:
            done.set()

    def after(batches: int) -> None:
        wait_until(lambda: len(outcomes) >= batches, timeout=600, what=f"{batches} batches")

    events = mixed_events(BATCH, seed=29)
    started = time.monotonic()
    with EventProducer(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        registry=RegistrySettings(url=endpoints.registry_url),
        settings=ProducerSettings(transactional_id=tid),
    ) as producer:
        fault = threading.Thread(target=inject, args=(after,), name="txn-faults")
        fault.start()
        batch, after_faults = 0, 0
        while not done.is_set() or after_faults < 20:
            futures: list[DeliveryFuture] = []
            try:
                with producer.transaction(timeout=30):
                    for i, event in enumerate(events):
                        headers = [("batch", str(batch).encode()), ("idx", str(i).encode())]
                        futures.append(producer.publish(event, topic=topic, extra_headers=headers))
                    if batch % 10 == 9:
                        raise DeliberateAbort
            except DeliberateAbort:
                errors["deliberate_abort"] += 1
            except ProducerFatalError as exc:
                name = exc.kafka_error.name() if exc.kafka_error is not None else "?"
                errors[f"fatal_{name}_" + ("recovered" if exc.recovered else "unrecovered")] += 1
                fatal_messages.append(f"batch {batch}: {exc}")
            except PublishError as exc:
                errors[type(exc).__name__] += 1
            outcomes[batch] = batch_outcome(futures) if futures else "failed"
            after_faults += done.is_set()
            batch += 1
        fault.join(timeout=60)
        assert not fault_errors, f"the fault injection failed: {fault_errors[0]!r}"
        healthy_at_end = producer.healthy
        recoveries = producer.recoveries
    elapsed = time.monotonic() - started
    seen = read_committed(bootstrap, topic)
    per_batch = Counter(b for (b, _), n in seen.items() for _ in range(n))
    duplicates = sum(n - 1 for n in seen.values() if n > 1)
    kinds = Counter(outcomes.values())
    partial = [b for b, n in per_batch.items() if n != BATCH]
    committed_missing = [b for b, o in outcomes.items() if o == "committed" and per_batch[b] != BATCH]
    failed_visible = [b for b, o in outcomes.items() if o == "failed" and per_batch[b]]
    deliberate_visible = [b for b in outcomes if b % 10 == 9 and per_batch[b]]
    committed_after = sum(1 for b, o in outcomes.items() if o == "committed" and b >= len(outcomes) - 20)
    figures.update(
        {
            "batches": len(outcomes),
            "committed": kinds["committed"],
            "failed": kinds["failed"],
            "indeterminate": kinds["indeterminate"],
            "errors": dict(errors),
            "kills": kills,
            "recoveries": recoveries,
            "partial": len(partial),
            "committed_missing": len(committed_missing),
            "failed_visible": len(failed_visible),
            "aborted_visible": len(deliberate_visible),
            "duplicates": duplicates,
            "committed_in_last_20": committed_after,
            "seconds": round(elapsed, 1),
            "fatal_at_batches": [m.split(":")[0] for m in fatal_messages],
            "first_fatal": fatal_messages[0] if fatal_messages else None,
        }
    )
    assert len(kills) == 3, figures
    assert (len(partial), len(committed_missing), duplicates) == (0, 0, 0), figures
    assert (len(failed_visible), len(deliberate_visible)) == (0, 0), figures
    aborts = [b for b in outcomes if b % 10 == 9]  # a clean abort, or the upstream fatal one at abort
    assert all(outcomes[b] == "failed" for b in aborts), figures
    assert committed_after >= 15, figures  # the producer survived the kills
    assert healthy_at_end, figures
