"""The schema registry hung (SIGSTOP) and killed + restarted while producers and consumers work.

Every registry call is bounded (RegistrySettings' timeouts and retries): a publish whose schema
cannot be registered fails with RegistryUnavailableError saying nothing was sent, `evstream
publish` exits 1 with one line, and a consumer holds the partition without blocking its poll loop
past max.poll.interval.ms. An id the registry does not know yet is held for a grace period, never
dead-lettered at once.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from evstream import KafkaSettings, RegistrySettings, RegistryUnavailableError
from evstream.consumers import ConsumerRunner, ConsumerSettings, Handlers
from evstream.producers import EventProducer
from evstream.schemas.domain import PaymentCaptured
from tests.consumer_helpers import declare_failure_topics
from tests.factories import mixed_events
from tests.helpers import one_line_error, run_cli, wait_until
from tests.kafka_helpers import end_offsets
from tests.reliability.faults import Private, paused

# One call: 2 attempts of at most 1 s connect + 1 s read, 0.2 s backoff: under 4.5 s.
FAST_REGISTRY = {
    "timeout_s": 1.0,
    "connect_timeout_s": 1.0,
    "max_retries": 1,
    "retry_wait_s": 0.1,
    "retry_wait_max_s": 0.2,
}


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


def test_consumer_holds_while_the_registry_is_hung_and_stays_in_the_group(
    solo: Private, consumed: tuple[str, list[PaymentCaptured], Handlers, list[str]]
) -> None:
    """The registry hung for longer than max.poll.interval.ms: the member is never dropped."""
    topic, events, handlers, seen = consumed
    group = f"g-hung-{topic}"
    settings = ConsumerSettings(
        max_poll_interval_ms=6000, session_timeout_ms=6000, commit_interval_s=0.5, retry_wait_max_s=0.5
    )
    declare_failure_topics(solo.endpoints, group, topic, settings)
    runner = ConsumerRunner(
        group,
        handlers,
        topics=[topic],
        kafka=KafkaSettings(bootstrap_servers=solo.endpoints.bootstrap_servers),
        registry=registry(solo),
        settings=settings,
    )
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
