"""Retry topics, block-and-retry and the lag gauge, against the real broker."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from prometheus_client import REGISTRY

from evstream import DeadLetter, KafkaSettings, MissingTopicsError, RegistrySettings
from evstream.consumers import ConsumerRunner, ConsumerSettings, Handlers, MessageContext
from evstream.consumers.failures import header_pairs
from evstream.schemas import Envelope
from evstream.schemas.events import Event
from tests.conftest import Endpoints, TopicFactory
from tests.consumer_helpers import ALL, publish, publish_deliveries, runner
from tests.factories import mixed_events
from tests.helpers import one_line_error, run_cli, wait_until
from tests.kafka_helpers import committed_offsets, end_offsets, read_records


def test_retry_tiers_delay_then_dead_letter_with_the_source_coordinates(
    endpoints: Endpoints, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=3)
    dlq = new_topic(partitions=1, name=f"{topic}.dlq")
    deliveries = {d.event_id: d for d in publish_deliveries(endpoints, topic, mixed_events(60, seed=21))}
    ids = list(deliveries)
    recovers, hopeless = set(ids[:10]), set(ids[10:15])  # recover on attempt 3 / never
    calls: dict[uuid.UUID, list[tuple[int, int, float]]] = defaultdict(list)  # attempt, tier, time
    handled: Counter[uuid.UUID] = Counter()
    handlers = Handlers()

    @handlers.on(*ALL)
    def handle(event: Event, ctx: MessageContext) -> None:
        event_id = ctx.envelope.event_id
        calls[event_id].append((ctx.attempt, ctx.retry_tier, time.monotonic()))
        if (event_id in recovers and ctx.attempt < 3) or event_id in hopeless:
            raise TimeoutError(f"downstream slow for {event_id}")
        handled[event_id] += 1

    group = f"g-{uuid.uuid4().hex[:8]}"
    settings = {"retry_attempts": 2, "retry_topic_delays_s": (0.5, 1.0)}
    consumer = runner(endpoints, group, handlers, topic, settings=settings)
    stats = consumer.run(until_idle_s=3)

    assert handled == Counter({i: 1 for i in set(ids) - hopeless})
    for event_id in recovers:  # 2 in place, then one from tier 1 at least its delay later
        attempts = calls[event_id]
        assert [(a, t) for a, t, _ in attempts] == [(1, 0), (2, 0), (3, 1)]
        assert attempts[2][2] - attempts[1][2] >= 0.45
    for event_id in hopeless:  # 2 in place, 2 in tier 1, 2 in tier 2, then the DLQ
        assert [(a, t) for a, t, _ in calls[event_id]] == [(1, 0), (2, 0), (3, 1), (4, 1), (5, 2), (6, 2)]
    assert (stats.retry_topic, stats.dead_lettered) == (15 + 5, 5)

    tier1, tier2 = consumer.retry.topic(topic, 1), consumer.retry.topic(topic, 2)
    assert tier1 == f"{topic}.{group}.retry.500ms"
    assert sum(end_offsets(endpoints.bootstrap_servers, tier1)) == 15
    assert sum(end_offsets(endpoints.bootstrap_servers, tier2)) == 5
    for name, partitions in ((topic, 3), (tier1, 3), (tier2, 3)):  # lag 0 (an empty partition has no commit)
        committed = committed_offsets(endpoints.bootstrap_servers, group, name, partitions)
        assert [max(c, 0) for c in committed] == end_offsets(endpoints.bootstrap_servers, name)
    dead = read_records(endpoints.bootstrap_servers, [dlq], 5)
    for record in dead:
        headers = dict(header_pairs(record))
        source = deliveries[Envelope.from_headers(record.headers()).event_id]
        assert headers["evstream.dlq.topic"] == topic.encode()  # not the retry topic
        assert headers["evstream.dlq.partition"] == str(source.partition).encode()
        assert headers["evstream.dlq.offset"] == str(source.offset).encode()
        assert headers["evstream.dlq.attempts"] == b"6"
        assert headers["evstream.dlq.error-type"] == b"TimeoutError"
        assert not any(k.startswith("evstream.retry.") for k in headers)


def test_ordered_handler_blocks_only_its_partition_and_keeps_order(
    endpoints: Endpoints, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=2)
    dlq = new_topic(partitions=1, name=f"{topic}.dlq")
    deliveries = publish_deliveries(endpoints, topic, mixed_events(120, seed=4))
    mine = [d for d in deliveries if d.partition == deliveries[0].partition]
    other = [d for d in deliveries if d.partition != deliveries[0].partition]
    assert len(mine) > 10
    assert len(other) > 10
    slow, poison = mine[3].event_id, mine[7].event_id  # slow recovers on attempt 3; poison never
    order: list[uuid.UUID] = []
    attempts: Counter[uuid.UUID] = Counter()
    handlers = Handlers()

    @handlers.on(*ALL, ordered=True)
    def handle(event: Event, ctx: MessageContext) -> None:
        event_id = ctx.envelope.event_id
        attempts[event_id] += 1
        if event_id == poison:
            raise DeadLetter("cannot ever apply") if attempts[event_id] == 4 else ValueError("not yet")
        if event_id == slow and attempts[event_id] < 3:
            raise ConnectionError("database blinked")
        order.append(event_id)

    settings = {"retry_attempts": 1, "ordered_retry_wait_s": 0.2}
    stats = runner(endpoints, f"g-{uuid.uuid4().hex[:8]}", handlers, topic, settings=settings).run(
        until_idle_s=3
    )
    # Each partition's events were handled in offset order, the poison one left out.
    assert [i for i in order if i in {d.event_id for d in mine}] == [
        d.event_id for d in mine if d.event_id != poison
    ]
    assert [i for i in order if i in {d.event_id for d in other}] == [d.event_id for d in other]
    # While the slow event's partition waited, the other partition went on.
    assert order.index(other[-1].event_id) < order.index(slow)
    assert (attempts[slow], attempts[poison]) == (3, 4)
    assert (stats.blocked, stats.dead_lettered) == (2 + 3, 1)
    (dead,) = read_records(endpoints.bootstrap_servers, [dlq], 1)
    assert dict(header_pairs(dead))["evstream.dlq.attempts"] == b"4"


def test_lag_gauge_follows_a_blocked_partition(endpoints: Endpoints, new_topic: TopicFactory) -> None:
    topic = new_topic(partitions=1)
    ids = publish(endpoints, topic, mixed_events(20, seed=8))
    release = threading.Event()
    handlers = Handlers()

    @handlers.on(*ALL, ordered=True)
    def handle(event: Event, ctx: MessageContext) -> None:
        if ctx.envelope.event_id == ids[10] and not release.is_set():
            raise ConnectionError("held back by the test")

    group = f"g-{uuid.uuid4().hex[:8]}"
    settings = {
        "retry_attempts": 1,
        "ordered_retry_wait_s": 0.1,
        "ordered_retry_wait_max_s": 0.2,
        "ordered_max_attempts": 0,
        "statistics_interval_ms": 100,
        "commit_interval_s": 0.2,
    }
    consumer = runner(endpoints, group, handlers, topic, settings=settings)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()

    def gauge() -> float | None:
        return REGISTRY.get_sample_value(
            "evstream_consumer_lag", {"topic": topic, "partition": "0", "group": group}
        )

    try:
        wait_until(lambda: consumer.lag.get((topic, 0)) == 10, timeout=30, what="lag 10 while blocked")
        assert gauge() == 10
        release.set()
        wait_until(lambda: consumer.lag.get((topic, 0)) == 0, timeout=30, what="lag 0 after release")
        assert gauge() == 0
    finally:
        consumer.stop()
        thread.join(30)
    assert consumer.stats.handled == 20


def test_slow_handlers_cut_batches_short_instead_of_being_dropped_from_the_group(
    endpoints: Endpoints, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=1)
    ids = publish(endpoints, topic, mixed_events(120, seed=2))
    calls: Counter[uuid.UUID] = Counter()
    handlers = Handlers()

    @handlers.on(*ALL)
    def handle(event: Event, ctx: MessageContext) -> None:
        time.sleep(0.06)  # simulated work: one fetched batch of 120 takes ~7 s > max.poll.interval (6 s)
        calls[ctx.envelope.event_id] += 1

    group = f"g-{uuid.uuid4().hex[:8]}"
    settings = {
        "batch_size": 500,
        "session_timeout_ms": 6000,
        "max_poll_interval_ms": 6000,
        "batch_deadline_s": 1.0,
    }
    stats = runner(endpoints, group, handlers, topic, settings=settings).run(until_idle_s=2)
    assert calls == Counter({i: 1 for i in ids})  # each once: no rebalance replayed anything
    assert stats.lost == 0
    assert stats.rewinds >= 5
    assert committed_offsets(endpoints.bootstrap_servers, group, topic, 1) == end_offsets(
        endpoints.bootstrap_servers, topic
    )


def test_missing_retry_and_dead_letter_topics_are_refused_until_declared(
    endpoints: Endpoints, new_topic: TopicFactory, admin: AdminClient, tmp_path: Path, repo_root: Path
) -> None:
    topic = new_topic(partitions=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    handlers = Handlers()

    @handlers.on(*ALL)
    def handle(event: Event) -> None:
        return None

    def bare_runner() -> ConsumerRunner:  # no helper: nothing is declared for it
        return ConsumerRunner(
            group,
            handlers,
            topics=[topic],
            kafka=KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers),
            registry=RegistrySettings(url=endpoints.registry_url),
            settings=ConsumerSettings(retry_topic_delays_s=(1.0, 60.0)),
        )

    refused = bare_runner()
    with pytest.raises(MissingTopicsError) as caught:
        refused.run(until_idle_s=1)
    wanted = [f"{topic}.{group}.retry.1s", f"{topic}.{group}.retry.1m", f"{topic}.dlq"]
    assert caught.value.topics == wanted
    assert "evstream topics add-retry-topics" in str(caught.value)
    assert refused.stats.consumed == 0
    assert not set(wanted) & set(admin.list_topics(timeout=10).topics)  # nothing created behind our back

    env = {
        "EVSTREAM_BOOTSTRAP_SERVERS": endpoints.bootstrap_servers,
        "EVSTREAM_REGISTRY_URL": endpoints.registry_url,
        "EVSTREAM_CONSUMER_RETRY_TOPIC_DELAYS_S": "[1, 60]",
    }
    consume = run_cli(
        "consume",
        group,
        "tests.integration.sample_handlers:handlers",
        "--topic",
        topic,
        env=env,
        cwd=repo_root,
    )
    assert consume.returncode == 2
    assert one_line_error(consume).startswith(f"error: group {group!r} needs topic(s) that do not exist: ")

    # The fix the message names: declare them in the topics file, apply it.
    topics_file = tmp_path / "topics.yaml"
    topics_file.write_text(f"topics:\n  - name: {topic}  # the source\n    partitions: 2\n")
    added = run_cli("topics", "add-retry-topics", "-f", str(topics_file), "-g", group, "-t", topic, env=env)
    assert added.returncode == 0, added.stderr
    assert "# the source" in topics_file.read_text()  # the file is appended to, not rewritten
    assert f"name: {topic}.{group}.redrive" in topics_file.read_text()  # where dlq redrive sends
    applied = run_cli("topics", "apply", "-f", str(topics_file), env=env)
    assert applied.returncode == 0, applied.stderr
    try:
        assert bare_runner().run(until_idle_s=1).consumed == 0
    finally:
        for future in admin.delete_topics([*wanted, f"{topic}.{group}.redrive"], request_timeout=30).values():
            future.result(timeout=30)
