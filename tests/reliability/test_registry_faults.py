"""The schema registry hung (SIGSTOP) and killed + restarted while producers and consumers work.

Every registry call is bounded (RegistrySettings' timeouts and retries): a publish whose schema
cannot be registered fails with RegistryUnavailableError saying nothing was sent, `evstream
publish` exits 1 with one line, and a consumer holds the partition without blocking its poll loop
past max.poll.interval.ms. An id the registry does not know yet is held for a grace period, never
dead-lettered at once.
"""

from __future__ import annotations

import io
import json
import struct
import threading
import time
import uuid
from typing import Any

import fastavro
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from prometheus_client import REGISTRY

from evstream import KafkaSettings, RegistrySettings, RegistryUnavailableError
from evstream.consumers import ConsumerRunner, ConsumerSettings, Handlers, MessageContext
from evstream.consumers.failures import header_pairs
from evstream.consumers.replay.redrives import redrive
from evstream.producers import EventProducer
from evstream.schemas.domain import PaymentCaptured
from evstream.schemas.events import envelope_headers
from tests.consumer_helpers import declare_failure_topics
from tests.factories import mixed_events
from tests.helpers import one_line_error, run_cli, wait_until
from tests.kafka_helpers import end_offsets, read_records
from tests.reliability.faults import Private, kill, paused

# One call: 2 attempts of at most 1 s connect + 1 s read, 0.2 s backoff: under 4.5 s.
FAST_REGISTRY = {
    "timeout_s": 1.0,
    "connect_timeout_s": 1.0,
    "max_retries": 1,
    "retry_wait_s": 0.1,
    "retry_wait_max_s": 0.2,
}


def metric(name: str, **labels: str) -> float:
    """A sample of this process's Prometheus registry (summed over unnamed labels)."""
    return sum(
        sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def registry(solo: Private) -> RegistrySettings:
    return RegistrySettings(url=solo.endpoints.registry_url, **FAST_REGISTRY)  # type: ignore[arg-type]


def payments(count: int) -> list[PaymentCaptured]:
    return [e for e in mixed_events(count * 6, seed=11) if isinstance(e, PaymentCaptured)][:count]


def test_publish_with_the_registry_hung_fails_within_the_timeout_and_sends_nothing(solo: Private) -> None:
    topic = solo.topic("reg-hung")
    settings = registry(solo)
    with EventProducer(
        kafka=KafkaSettings(bootstrap_servers=solo.endpoints.bootstrap_servers), registry=settings
    ) as producer:
        with paused(solo.registry_pid):
            started = time.monotonic()
            with pytest.raises(RegistryUnavailableError, match="nothing was sent") as caught:
                producer.publish(payments(1)[0], topic=topic)
            took = time.monotonic() - started
        assert took < settings.call_budget_s + 1, f"blocked {took:.1f}s"
        assert "schema registry unavailable" in str(caught.value)
        producer.publish(payments(1)[0], topic=topic).result(timeout=30)  # back: works again
    assert sum(end_offsets(solo.endpoints.bootstrap_servers, topic)) == 1


def test_cli_publish_with_the_registry_hung_exits_1_in_one_line_within_the_timeout(solo: Private) -> None:
    topic = solo.topic("reg-hung-cli")
    env = {
        **solo.endpoints.environment(),
        **{f"EVSTREAM_REGISTRY_{k.upper()}": str(v) for k, v in FAST_REGISTRY.items()},
    }
    data = payments(1)[0].model_dump(mode="json")
    with paused(solo.registry_pid):
        started = time.monotonic()
        proc = run_cli(
            "publish", topic, "--type", "PaymentCaptured", "--data", json.dumps(data), env=env, timeout=60
        )
        took = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    line = one_line_error(proc)
    assert "schema registry unavailable" in line, line
    assert "nothing was sent" in line, line
    assert took < registry(solo).call_budget_s + 10, f"took {took:.1f}s"  # + interpreter start
    assert sum(end_offsets(solo.endpoints.bootstrap_servers, topic)) == 0


@pytest.fixture
def consumed(solo: Private) -> tuple[str, list[PaymentCaptured], Handlers, list[str]]:
    """A topic with 20 payments on it (their schema registered), a handler recording event ids."""
    topic = solo.topic("reg-consume")
    events = payments(20)
    with EventProducer(
        kafka=KafkaSettings(bootstrap_servers=solo.endpoints.bootstrap_servers), registry=registry(solo)
    ) as producer:
        for future in producer.publish_many(events, topic=topic):
            future.result(timeout=30)
    seen: list[str] = []
    handlers = Handlers()

    @handlers.on(PaymentCaptured)
    def record(event: PaymentCaptured) -> None:
        seen.append(event.payment_id)

    return topic, events, handlers, seen


def run_in_thread(runner: ConsumerRunner) -> threading.Thread:
    thread = threading.Thread(target=runner.run, name="runner", daemon=True)
    thread.start()
    return thread


@pytest.mark.long  # make reliability; make test keeps the publish-side and the learnt-later scenarios
def test_consumer_holds_while_the_registry_is_hung_and_stays_in_the_group(
    solo: Private, consumed: tuple[str, list[PaymentCaptured], Handlers, list[str]]
) -> None:
    """The registry hung for longer than max.poll.interval.ms: the member is never dropped."""
    topic, events, handlers, seen = consumed
    group = f"g-hung-{topic}"
    settings = ConsumerSettings(
        max_poll_interval_ms=6000, session_timeout_ms=6000, commit_interval_s=0.5, retry_wait_max_s=0.5
    )
    runner = solo_runner(solo, group, topic, handlers, settings)
    with paused(solo.registry_pid):
        thread = run_in_thread(runner)
        try:
            wait_until(lambda: runner.assignment, timeout=60, what="an assignment")
            hung = time.monotonic()
            while time.monotonic() - hung < 10:  # longer than max.poll.interval.ms
                assert not seen
                assert runner.stats.dead_lettered == 0
                time.sleep(0.5)  # observing, not synchronising: the registry stays paused 10 s
        except BaseException:
            runner.stop()
            raise
    try:
        wait_until(lambda: len(seen) >= len(events), timeout=60, what="every event handled")
    finally:
        runner.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert sorted(seen) == sorted(e.payment_id for e in events)
    assert runner.stats.dead_lettered == 0
    assert runner.stats.lost == 0, "the member was dropped from the group: its poll loop blocked"


# ---------------------------------------------------------------- unknown schema ids (defect 2)


def novel_schema(tag: str) -> dict[str, Any]:
    """PaymentCaptured's schema with a doc no one registered: new content, so a new registry id."""
    return {**PaymentCaptured.avro_schema_dict(), "doc": f"issue-14 {tag}"}


def next_id(client: SchemaRegistryClient, topic: str) -> int:
    """The id the registry hands out next (ids are sequential; this private registry is ours)."""
    probe = novel_schema(f"probe {uuid.uuid4()}")
    return int(client.register_schema(f"{topic}-probe", Schema(json.dumps(probe), "AVRO"))) + 1


def produce_ahead_of_registry(
    solo: Private, topic: str, events: list[PaymentCaptured], schema_id: int
) -> None:
    """Records framed with ``schema_id`` before the registry has it, with a full envelope."""
    parsed = fastavro.parse_schema(novel_schema(str(schema_id)))
    raw = Producer({"bootstrap.servers": solo.endpoints.bootstrap_servers, "acks": "all"})
    for event in events:
        body = io.BytesIO()
        body.write(struct.pack(">bI", 0, schema_id))
        fastavro.schemaless_writer(body, parsed, event.model_dump())
        headers = envelope_headers(uuid.uuid4(), "PaymentCaptured", None, "issue-14")
        raw.produce(topic, value=body.getvalue(), key=event.aggregate_id(), headers=headers)
    assert raw.flush(30) == 0


def solo_runner(
    solo: Private,
    group: str,
    topic: str,
    handlers: Handlers,
    settings: ConsumerSettings,
    *,
    redrive: bool = False,
) -> ConsumerRunner:
    """A runner of ``group`` over ``topic`` on the private stack, its failure topics declared
    (``redrive``: its redrive topic too)."""
    declare_failure_topics(solo.endpoints, group, topic, settings, redrive=redrive)
    return ConsumerRunner(
        group,
        handlers,
        topics=[topic],
        kafka=KafkaSettings(bootstrap_servers=solo.endpoints.bootstrap_servers),
        registry=registry(solo),
        settings=settings,
    )


def grace_runner(solo: Private, topic: str, handlers: Handlers, grace_s: float) -> ConsumerRunner:
    group = f"g-grace-{topic}"
    settings = ConsumerSettings(
        commit_interval_s=0.5,
        unknown_schema_grace_s=grace_s,
        unknown_schema_retry_wait_s=0.2,
        unknown_schema_retry_wait_max_s=1.0,
    )
    return solo_runner(solo, group, topic, handlers, settings, redrive=True)  # dlq redrive goes there


def test_an_id_the_registry_learns_later_is_held_not_dead_lettered(
    solo: Private, consumed: tuple[str, list[PaymentCaptured], Handlers, list[str]]
) -> None:
    """Before: 33 of 33 valid events dead-lettered within 10 s of a registry restart."""
    topic, events, handlers, seen = consumed
    late = payments(33)
    with SchemaRegistryClient(registry(solo).client_config()) as client:
        schema_id = next_id(client, topic)
        produce_ahead_of_registry(solo, topic, late, schema_id)
        runner = grace_runner(solo, topic, handlers, grace_s=120)
        thread = run_in_thread(runner)
        try:
            wait_until(
                lambda: runner.stats.schema_held >= 3, timeout=60, what="the unknown id held, asked again"
            )
            assert runner.stats.dead_lettered == 0
            registered = client.register_schema(
                f"{topic}-late", Schema(json.dumps(novel_schema(str(schema_id))), "AVRO")
            )
            assert registered == schema_id, "someone else registered a schema on the private registry"
            wait_until(
                lambda: len(seen) >= len(events) + len(late), timeout=60, what="the held events handled"
            )
        finally:
            runner.stop()
            thread.join(timeout=30)
    assert runner.stats.dead_lettered == 0
    assert sorted(seen) == sorted(e.payment_id for e in events + late)
    assert metric("evstream_events_outcome_total", topic=topic, outcome="schema_held") >= 3


@pytest.mark.long  # make reliability (the harness unit tests cover the grace rule in make test)
def test_an_id_still_unknown_after_the_grace_is_dead_lettered_and_redrive_brings_it_back(
    solo: Private, consumed: tuple[str, list[PaymentCaptured], Handlers, list[str]]
) -> None:
    topic, events, handlers, seen = consumed
    late = payments(3)
    with SchemaRegistryClient(registry(solo).client_config()) as client:
        schema_id = next_id(client, topic)
        produce_ahead_of_registry(solo, topic, late, schema_id)
        runner = grace_runner(solo, topic, handlers, grace_s=3)
        started = time.monotonic()
        stats = runner.run(until_idle_s=2)
        assert time.monotonic() - started >= 3  # held for the grace period first
        assert (stats.handled, stats.dead_lettered) == (len(events), len(late))
        dead = read_records(solo.endpoints.bootstrap_servers, [f"{topic}.dlq"], len(late))
        reasons = {dict(header_pairs(m))["evstream.dlq.reason"] for m in dead}
        assert reasons == {b"unknown_schema_id"}
        client.register_schema(f"{topic}-late", Schema(json.dumps(novel_schema(str(schema_id))), "AVRO"))
    result = redrive(KafkaSettings(bootstrap_servers=solo.endpoints.bootstrap_servers), f"{topic}.dlq")
    assert result.total_sent == len(late)
    again = grace_runner(solo, topic, handlers, grace_s=3).run(until_idle_s=2)
    assert (again.handled, again.dead_lettered) == (len(late), 0)
    assert sorted(seen) == sorted(e.payment_id for e in events + late)


# ---------------------------------------------------------------- registry SIGKILL + restart


def kill_registry_runner(
    solo: Private, topic: str, seen: dict[str, set[uuid.UUID]], group: str
) -> ConsumerRunner:
    """A runner over ``topic`` recording the event ids it handled (every type of mixed_events)."""
    handlers = Handlers()
    models = sorted({type(e) for e in mixed_events(12)}, key=lambda m: m.event_type())
    ids = seen.setdefault(group, set())

    @handlers.on(*models)
    def record(event: Any, context: MessageContext) -> None:
        ids.add(context.envelope.event_id)

    settings = ConsumerSettings(commit_interval_s=0.5, retry_wait_max_s=0.5)
    return solo_runner(solo, group, topic, handlers, settings)


@pytest.mark.long  # make reliability
def test_registry_killed_and_restarted_during_publish_and_consume_loses_and_dead_letters_nothing(
    solo: Private, figures: dict[str, object]
) -> None:
    """SIGKILL of the registry while a producer publishes and a consumer reads, a second consumer
    group (nothing cached) started while it is down, then the registry restarted: publishes of
    cached types go on, a type first seen in the outage is refused with nothing sent, every
    acknowledged event is handled by both groups, nothing valid is dead-lettered."""
    topic = solo.topic("reg-kill")
    events = [e for e in mixed_events(1200, seed=41)]
    warm = {type(e) for e in events[:600] if not isinstance(e, PaymentCaptured)}  # PaymentCaptured: cold
    acked: set[uuid.UUID] = set()
    refused: list[uuid.UUID] = []
    messages: set[str] = set()
    seen: dict[str, set[uuid.UUID]] = {}
    first = kill_registry_runner(solo, topic, seen, f"g-kill-a-{topic}")
    threads = [run_in_thread(first)]
    runners = [first]
    try:
        with EventProducer(
            kafka=KafkaSettings(bootstrap_servers=solo.endpoints.bootstrap_servers), registry=registry(solo)
        ) as producer:

            def publish(batch: list[Any]) -> None:
                futures = []
                for event in batch:
                    event_id = uuid.uuid4()
                    try:
                        futures.append((event_id, producer.publish(event, topic=topic, event_id=event_id)))
                    except RegistryUnavailableError as exc:
                        refused.append(event_id)
                        messages.add(str(exc)[-40:])
                for event_id, future in futures:
                    future.result(timeout=60)
                    acked.add(event_id)

            publish([e for e in events[:600] if type(e) in warm])  # warm types cached, then the kill
            kill(solo.registry_pid)
            killed = time.monotonic()
            second = kill_registry_runner(solo, topic, seen, f"g-kill-b-{topic}")  # nothing cached
            threads.append(run_in_thread(second))
            runners.append(second)
            publish(events[600:900])  # every type: the cold one is refused, nothing sent
            refused_in_outage = len(refused)
            wait_until(lambda: second.assignment, timeout=60, what="the second group's assignment")
            assert second.stats.dead_lettered == 0
            solo.restart_dead()
            restarted = time.monotonic() - killed
            publish(events[900:])  # every type again, the cold one included
        for runner in runners:
            wait_until(
                lambda runner=runner: len(seen[runner.group_id]) >= len(acked),  # type: ignore[misc]
                timeout=120,
                what=f"{runner.group_id} to handle every acknowledged event",
            )
    finally:
        for runner in runners:
            runner.stop()
        for thread in threads:
            thread.join(timeout=30)
    figures.update(
        {
            "acked": len(acked),
            "refused_nothing_sent": len(refused),
            "refused_in_outage": refused_in_outage,
            "registry_down_s": round(restarted, 1),
            "handled": {r.group_id[:8]: len(seen[r.group_id]) for r in runners},
            "dead_lettered": sum(r.stats.dead_lettered for r in runners),
            "schema_held": sum(r.stats.schema_held for r in runners),
            "registry_held": [r.stats.registry_held for r in runners],
        }
    )
    assert all("nothing was sent" in m for m in messages), messages
    assert refused_in_outage > 0, figures  # the cold type was refused while the registry was down
    assert len(refused) == refused_in_outage, figures  # and accepted again after the restart
    assert all(seen[r.group_id] == acked for r in runners), figures
    assert sum(end_offsets(solo.endpoints.bootstrap_servers, topic)) == len(acked), figures
    assert sum(r.stats.dead_lettered for r in runners) == 0, figures
    assert second.stats.registry_held > 0, figures  # it did meet the outage (and held, not dead-lettered)
    assert not any(t.is_alive() for t in threads)
