"""The loss verifier (DESIGN.md section 9) on a private 3-node cluster (RF 3, min ISR 2).

Every event carries a unique id and a per-key sequence; every delivery outcome is recorded; after
the faults every partition is read back to its end and the verifier counts: lost (acknowledged,
never read) = 0; duplicates = 0 (idempotence); acknowledged offset = offset read; per-key order
kept; an indeterminate event present at most once; a failed one never present. Faults are
signals to broker pids while the producer runs: the partition leader SIGKILLed three times, a
rolling SIGTERM of every node, the leader SIGSTOPped for 15 s. Marked `long`: `make reliability`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from evstream import (
    DeliveryFailedError,
    DeliveryIndeterminateError,
    KafkaSettings,
    RegistrySettings,
)
from evstream.producers import DeliveryFuture, EventProducer
from evstream.schemas import Envelope
from evstream.stack import LocalStack
from tests.conftest import Endpoints
from tests.factories import mixed_events
from tests.helpers import wait_until
from tests.reliability.faults import full_isr, leader_of, replicated_topic, start_again

pytestmark = [pytest.mark.long, pytest.mark.slow]

EVENTS = 50_000
KEYS = 500


def leader_kills(stack: LocalStack, admin: AdminClient, topic: str, progress: Callable[[], float]) -> None:
    for at in (0.15, 0.4, 0.65):
        wait_until(lambda at=at: progress() >= at, timeout=300, what=f"{at:.0%} published")  # type: ignore[misc]
        victim = leader_of(admin, topic)
        stack.stop_node(victim, sig=signal.SIGKILL)
        start_again(stack, victim)
        wait_until(lambda: full_isr(admin, topic), timeout=120, what="full ISR again", interval=0.5)


def rolling_bounce(stack: LocalStack, admin: AdminClient, topic: str, progress: Callable[[], float]) -> None:
    wait_until(lambda: progress() >= 0.1, timeout=300, what="10% published")
    for node in (1, 2, 3):
        stack.stop_node(node, sig=signal.SIGTERM)
        start_again(stack, node)
        wait_until(lambda: full_isr(admin, topic), timeout=120, what="full ISR again", interval=0.5)


def leader_paused(stack: LocalStack, admin: AdminClient, topic: str, progress: Callable[[], float]) -> None:
    wait_until(lambda: progress() >= 0.2, timeout=300, what="20% published")
    pid = stack.state().node(leader_of(admin, topic)).pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        threading.Event().wait(15)  # the fault itself: the leader stays paused 15 s
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: full_isr(admin, topic), timeout=120, what="full ISR again", interval=0.5)


def read_back(bootstrap: str, topic: str, partitions: int) -> list[tuple[int, int, uuid.UUID, str, int]]:
    """(partition, offset, event id, key, sequence) of every record, partition by partition."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"verify-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    try:

        def watermarks() -> list[int] | None:
            try:  # a broker just restarted can drop the first request
                return [
                    consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in range(partitions)
                ]
            except KafkaException:
                return None

        ends = wait_until(watermarks, timeout=120, what=f"end offsets of {topic}", interval=1.0)
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        rows: list[tuple[int, int, uuid.UUID, str, int]] = []

        def drain() -> bool:
            for m in consumer.consume(2000, timeout=0.5):
                if m.error() is None:
                    headers = dict(m.headers() or [])
                    rows.append(
                        (
                            m.partition() or 0,
                            m.offset() or 0,
                            Envelope.from_headers(m.headers() or []).event_id,
                            (m.key() or b"").decode(),
                            int(headers.get("seq") or b"0"),
                        )
                    )
            return len(rows) >= sum(ends)

        wait_until(drain, timeout=300, what=f"{sum(ends)} records read back")
        return rows
    finally:
        consumer.close()


SCENARIOS = {
    "leader_sigkill_x3": leader_kills,
    "rolling_sigterm": rolling_bounce,
    "leader_sigstop_15s": leader_paused,
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_nothing_acknowledged_is_lost_duplicated_or_reordered(
    trio: LocalStack, endpoints: Endpoints, scenario: str, figures: dict[str, object]
) -> None:
    admin, topic = replicated_topic(trio, f"verify-{scenario}", 6)
    bootstrap = trio.state().bootstrap_servers
    events = mixed_events(EVENTS, seed=17)
    futures: list[tuple[uuid.UUID, str, int, DeliveryFuture]] = []
    sent = [0]
    fault_errors: list[BaseException] = []

    def inject() -> None:
        try:
            SCENARIOS[scenario](trio, admin, topic, lambda: sent[0] / EVENTS)
        except BaseException as exc:  # reported by the test, not as an unhandled thread exception
            fault_errors.append(exc)

    fault = threading.Thread(target=inject, name=f"fault-{scenario}")
    started = time.monotonic()
    with EventProducer(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        registry=RegistrySettings(url=endpoints.registry_url),
    ) as producer:
        fault.start()
        seqs: Counter[str] = Counter()
        for i, event in enumerate(events):
            key = f"k{i % KEYS}"
            seqs[key] += 1
            eid = uuid.uuid4()
            future = producer.publish(
                event, topic=topic, key=key, event_id=eid, extra_headers=[("seq", str(seqs[key]).encode())]
            )
            futures.append((eid, key, seqs[key], future))
            sent[0] = i + 1
            if i % 250 == 0:
                time.sleep(0.1)  # pacing: the publish spans the faults (~20 s), not a synchronisation
        fault.join(timeout=600)
        assert not fault.is_alive()
        assert not fault_errors, f"the fault injection failed: {fault_errors[0]!r}"
        producer.flush(180)
    elapsed = time.monotonic() - started
    outcome: dict[uuid.UUID, str] = {}
    acked_at: dict[uuid.UUID, tuple[int, int]] = {}
    for eid, _, _, future in futures:
        error = future.exception(timeout=180)
        if error is None:
            delivery = future.result()
            outcome[eid], acked_at[eid] = "acked", (delivery.partition, delivery.offset)
        elif isinstance(error, DeliveryIndeterminateError):
            outcome[eid] = "indeterminate"
        else:
            assert isinstance(error, DeliveryFailedError)
            outcome[eid] = "failed"
    rows = read_back(bootstrap, topic, 6)
    read_count = Counter(eid for _, _, eid, _, _ in rows)
    read_at = {eid: (p, o) for p, o, eid, _, _ in rows}
    lost = [e for e, o in outcome.items() if o == "acked" and read_count[e] == 0]
    duplicates = sum(c - 1 for c in read_count.values() if c > 1)
    moved = [e for e, at in acked_at.items() if read_at.get(e) != at]
    indeterminate_twice = [e for e, o in outcome.items() if o == "indeterminate" and read_count[e] > 1]
    failed_present = [e for e, o in outcome.items() if o == "failed" and read_count[e] > 0]
    by_key: dict[str, list[int]] = defaultdict(list)
    for _, _, _, key, seq in sorted(rows):
        by_key[key].append(seq)
    out_of_order = sum(1 for seq in by_key.values() if seq != sorted(seq))
    kinds = Counter(outcome.values())
    figures.update(
        {
            "events": EVENTS,
            "acked": kinds["acked"],
            "indeterminate": kinds["indeterminate"],
            "failed": kinds["failed"],
            "read": len(rows),
            "lost": len(lost),
            "duplicates": duplicates,
            "acked_offset_mismatch": len(moved),
            "keys_out_of_order": out_of_order,
            "indeterminate_twice": len(indeterminate_twice),
            "failed_present": len(failed_present),
            "seconds": round(elapsed, 1),
        }
    )
    assert (len(lost), duplicates, len(moved), out_of_order) == (0, 0, 0, 0), figures
    assert (len(indeterminate_twice), len(failed_present)) == (0, 0), figures
