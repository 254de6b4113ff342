"""Consumer-group scenarios from the issue: 10k mixed failures, members splitting partitions,
trace continuation through a handler, static membership after kill -9."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from confluent_kafka import Producer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from evstream import KafkaSettings, RegistrySettings
from evstream.consumers import Handlers, MessageContext, SQLiteDedupeStore
from evstream.consumers.failures import header_pairs
from evstream.logs import EventContextFilter
from evstream.producers import EventProducer
from evstream.schemas import Envelope
from evstream.schemas.events import Event
from tests.conftest import Endpoints, TopicFactory
from tests.consumer_helpers import (
    ALL,
    consume_cmd,
    declare_failure_topics,
    publish,
    run_until_idle,
    runner,
    worker_env,
)
from tests.factories import mixed_events
from tests.helpers import wait_until
from tests.kafka_helpers import committed_offsets, end_offsets, read_records


def test_ten_thousand_events_with_mixed_failures(
    endpoints: Endpoints, new_topic: TopicFactory, tmp_path: Path
) -> None:
    topic = new_topic(partitions=6)
    dlq = new_topic(partitions=1, name=f"{topic}.dlq")
    ids = publish(endpoints, topic, mixed_events(10_000, seed=99))
    once, twice, permanent = set(ids[0:250]), set(ids[250:500]), set(ids[500:600])  # 5 % and 1 %
    raw = Producer({"bootstrap.servers": endpoints.bootstrap_servers})
    for i in range(50):  # 0.5 %: bytes that are not events (half with a plausible envelope)
        envelope = Envelope(event_type="OrderPlaced").to_headers() if i % 2 else None
        raw.produce(topic, value=b"\x07garbage-%d" % i, key=b"bad-%d" % i, headers=envelope)
    assert raw.flush(30) == 0
    handled: Counter[uuid.UUID] = Counter()
    handlers = Handlers()

    @handlers.on(*ALL)
    def handle(event: Event, ctx: MessageContext) -> None:
        event_id = ctx.envelope.event_id
        if (event_id in once and ctx.attempt == 1) or (event_id in twice and ctx.attempt <= 2):
            raise ConnectionError("transient")
        if event_id in permanent:
            raise ValueError("permanent")
        handled[event_id] += 1

    group = f"g-{uuid.uuid4().hex[:8]}"
    dedupe = SQLiteDedupeStore(tmp_path / "dedupe.db")
    settings = {"retry_attempts": 2, "retry_topic_delays_s": (0.2,)}
    consumer = runner(endpoints, group, handlers, topic, settings=settings, dedupe=dedupe)
    stats = consumer.run(until_idle_s=3)
    dedupe.close()

    assert handled == Counter({i: 1 for i in set(ids) - permanent})  # exactly once each
    assert stats.handled == 9_900
    assert (stats.retry_topic, stats.dead_lettered) == (250 + 100, 100 + 50)
    dead = read_records(endpoints.bootstrap_servers, [dlq], 150)
    reasons = Counter(dict(header_pairs(m))["evstream.dlq.reason"] for m in dead)
    assert reasons == Counter({b"handler": 100, b"undecodable": 50})
    for record in dead:
        headers = dict(header_pairs(record))
        assert headers["evstream.dlq.topic"] == topic.encode()
        if headers["evstream.dlq.reason"] == b"handler":
            assert Envelope.from_headers(record.headers()).event_id in permanent
            assert (headers["evstream.dlq.attempts"], headers["evstream.dlq.error-type"]) == (
                b"4",
                b"ValueError",
            )
        else:
            assert (record.value() or b"").startswith(b"\x07garbage-")
    for name in (topic, consumer.retry.topic(topic, 1)):  # lag 0 everywhere (an empty partition: no commit)
        committed = committed_offsets(endpoints.bootstrap_servers, group, name, 6)
        assert [max(c, 0) for c in committed] == end_offsets(endpoints.bootstrap_servers, name)


def test_two_members_of_one_group_split_the_partitions(endpoints: Endpoints, new_topic: TopicFactory) -> None:
    topic = new_topic(partitions=6)
    group = f"g-{uuid.uuid4().hex[:8]}"
    seen: dict[str, list[tuple[uuid.UUID, int]]] = {"a": [], "b": []}
    members = {}
    for name in ("a", "b"):
        handlers = Handlers()

        @handlers.on(*ALL)
        def handle(event: Event, ctx: MessageContext, got: list[tuple[uuid.UUID, int]] = seen[name]) -> None:
            got.append((ctx.envelope.event_id, ctx.partition))

        members[name] = runner(endpoints, group, handlers, topic)
    threads = [threading.Thread(target=m.run, daemon=True) for m in members.values()]
    for thread in threads:
        thread.start()
    try:

        def split() -> bool:
            a, b = members["a"].assignment, members["b"].assignment
            return bool(a) and bool(b) and not a & b and len(a | b) == 6

        wait_until(split, timeout=60, what="both members own partitions")
        ids = publish(endpoints, topic, mixed_events(3000, seed=12))
        wait_until(lambda: len(seen["a"]) + len(seen["b"]) >= 3000, timeout=60, what="3000 handled")
    finally:
        for member in members.values():
            member.stop()
        for thread in threads:
            thread.join(60)
    handled = Counter(i for got in seen.values() for i, _ in got)
    assert handled == Counter({i: 1 for i in ids})  # each event once, by one member
    partitions_a, partitions_b = ({p for _, p in seen[n]} for n in ("a", "b"))
    assert partitions_a
    assert partitions_b
    assert not partitions_a & partitions_b
    assert partitions_a | partitions_b == set(range(6))


def test_handler_publishes_continue_the_trace_and_logs_carry_the_event(
    endpoints: Endpoints, new_topic: TopicFactory
) -> None:
    source, derived = new_topic(partitions=1), new_topic(partitions=1)
    spans = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    kafka = KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers)
    registry = RegistrySettings(url=endpoints.registry_url)
    with EventProducer(kafka=kafka, registry=registry) as producer:
        event = mixed_events(1)[0]
        sent = producer.publish(event, topic=source, traceparent=parent, correlation_id="checkout-42")
        source_id = sent.result(timeout=30).event_id
        logged: list[logging.LogRecord] = []
        app_log = logging.getLogger("test.app")
        capture = logging.Handler()
        capture.emit = logged.append  # type: ignore[method-assign,assignment]
        capture.addFilter(EventContextFilter())
        app_log.addHandler(capture)
        handlers = Handlers()

        @handlers.on(*ALL)
        def handle(event: Event, ctx: MessageContext) -> None:
            app_log.warning("handling")
            producer.publish(event, topic=derived).result(timeout=30)

        try:
            runner(endpoints, f"g-{uuid.uuid4().hex[:8]}", handlers, source).run(until_idle_s=2)
        finally:
            app_log.removeHandler(capture)
    (record,) = read_records(endpoints.bootstrap_servers, [derived], 1)
    envelope = Envelope.from_headers(record.headers())
    assert envelope.causation_id == str(source_id)
    assert envelope.correlation_id == "checkout-42"
    assert envelope.traceparent is not None
    _, trace_id, span_id, _ = envelope.traceparent.split("-")
    assert trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span_id != "00f067aa0ba902b7"
    (span,) = [s for s in spans.get_finished_spans() if s.name == f"{source} process"]
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert f"{span.context.span_id:016x}" == span_id  # the derived event's parent is the handler span
    (line,) = logged
    assert (line.event_id, line.correlation_id, line.trace_id) == (  # type: ignore[attr-defined]
        str(source_id),
        "checkout-42",
        trace_id,
    )


def test_static_member_restarted_after_kill_9_resumes_without_waiting_for_its_session(
    endpoints: Endpoints, new_topic: TopicFactory, tmp_path: Path, repo_root: Path
) -> None:
    topic = new_topic(partitions=3)
    ids = {str(i) for i in publish(endpoints, topic, mixed_events(600, seed=6))}
    handled_file = tmp_path / "handled.txt"
    env = worker_env(
        endpoints,
        handled_file,
        EVSTREAM_TEST_HANDLER_WORK_S="0.005",
        EVSTREAM_CONSUMER_COMMIT_INTERVAL_S="0.5",
        EVSTREAM_CONSUMER_BATCH_SIZE="50",
        EVSTREAM_CONSUMER_SESSION_TIMEOUT_MS="60000",  # a dynamic member would block a restart for 60 s
        EVSTREAM_CONSUMER_GROUP_INSTANCE_ID="worker-1",
    )
    group = f"g-{uuid.uuid4().hex[:8]}"
    declare_failure_topics(endpoints, group, topic)
    cmd = consume_cmd(group, topic, "--dedupe", str(tmp_path / "dedupe.db"))

    def lines() -> list[str]:
        return handled_file.read_text().splitlines() if handled_file.exists() else []

    worker = subprocess.Popen(
        cmd, env=env, cwd=repo_root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: len(lines()) >= 200, timeout=60, what="200 handled before the kill")
    finally:
        worker.kill()
        worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    restarted = time.monotonic()
    final = run_until_idle(cmd, env, repo_root, 3)
    assert final.returncode == 0, final.stderr
    assert {line.split()[0] for line in lines()} == ids  # nothing lost
    # The same group.instance.id takes its partitions straight back: well inside the 60 s session.
    assert time.monotonic() - restarted < 30
