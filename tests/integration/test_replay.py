"""Replay against the real broker: reset by time, refusal while active, bounded replays,
DLQ redrive with its loop guard, projection rebuild, and bad input from the CLI."""

from __future__ import annotations

import json
import threading
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from evstream import DeadLetter, GroupActiveError, KafkaSettings, RegistrySettings
from evstream.consumers import Handlers, MessageContext
from evstream.consumers.failures import header_pairs
from evstream.consumers.projection import OrderProjection, compare, swap
from evstream.consumers.replay import BoundedReplay, Cluster, Target, apply_plan, plan_replay, redrive
from evstream.consumers.replay.deadletters import read_dead_letters
from evstream.producers import EventProducer
from evstream.schemas import Envelope
from evstream.schemas.events import Event
from tests.conftest import Endpoints, TopicFactory
from tests.consumer_helpers import ALL, publish, publish_deliveries, runner
from tests.factories import mixed_events
from tests.helpers import one_line_error, run_cli, wait_until
from tests.kafka_helpers import committed_offsets, end_offsets, read_records, record_at

Seen = dict[int, list[tuple[int, int]]]  # partition -> [(offset, timestamp ms)]


def cluster(endpoints: Endpoints) -> Cluster:
    return Cluster(AdminClient({"bootstrap.servers": endpoints.bootstrap_servers}))


def consume_all(endpoints: Endpoints, group: str, topic: str) -> Seen:
    seen: Seen = defaultdict(list)
    handlers = Handlers()

    @handlers.on(*ALL)
    def handle(event: Event, ctx: MessageContext) -> None:
        assert ctx.timestamp is not None
        seen[ctx.partition].append((ctx.offset, int(ctx.timestamp.timestamp() * 1000)))

    runner(endpoints, group, handlers, topic).run(until_idle_s=2)
    return seen


def test_reset_to_a_datetime_replays_exactly_the_records_from_then(
    endpoints: Endpoints, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=3)
    publish(endpoints, topic, mixed_events(300, seed=31))
    publish(endpoints, topic, mixed_events(300, seed=32))
    group = f"g-{uuid.uuid4().hex[:8]}"
    first = consume_all(endpoints, group, topic)
    assert sum(len(v) for v in first.values()) == 600
    stamps = sorted(ts for records in first.values() for _, ts in records)
    cut = stamps[len(stamps) // 2]  # a real record time: some records on each side of it
    when = datetime.fromtimestamp(cut / 1000, UTC)

    plan = plan_replay(cluster(endpoints), group, topic, Target(kind="datetime", value=when.isoformat()))
    expected = {p: [(o, ts) for o, ts in first[p] if ts >= cut] for p in first}
    assert {p.partition: p.target for p in plan.partitions} == {
        p: (expected[p][0][0] if expected[p] else max(o for o, _ in first[p]) + 1) for p in first
    }
    assert plan.replayed == sum(len(v) for v in expected.values())
    result = apply_plan(cluster(endpoints), plan)
    assert result.applied
    assert result.committed == plan.targets()  # what the Admin API now reports for the group

    again = consume_all(endpoints, group, topic)
    for partition, records in expected.items():
        assert again.get(partition, []) == records  # exactly those, in offset order


def test_apply_is_refused_while_the_group_has_members(endpoints: Endpoints, new_topic: TopicFactory) -> None:
    topic = new_topic(partitions=2)
    publish(endpoints, topic, mixed_events(50, seed=33))
    group = f"g-{uuid.uuid4().hex[:8]}"
    consume_all(endpoints, group, topic)
    before = committed_offsets(endpoints.bootstrap_servers, group, topic, 2)
    plan = plan_replay(cluster(endpoints), group, topic, Target(kind="earliest"))
    handlers = Handlers()
    handlers.on(*ALL)(lambda event, ctx: None)
    member = runner(endpoints, group, handlers, topic)
    thread = threading.Thread(target=member.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(member.assignment) == 2, timeout=60, what="the member owns both partitions")
        with pytest.raises(GroupActiveError, match=r"1 active member\(s\): evstream@") as refused:
            apply_plan(cluster(endpoints), plan)
        assert len(refused.value.members) == 1
        cli = run_cli(
            "replay", "apply", "--group", group, "--topic", topic, "--to-earliest",
            env={"EVSTREAM_BOOTSTRAP_SERVERS": endpoints.bootstrap_servers},
        )  # fmt: skip
        assert cli.returncode == 1
        assert "active member(s)" in one_line_error(cli)
    finally:
        member.stop()
        thread.join(30)
    assert committed_offsets(endpoints.bootstrap_servers, group, topic, 2) == before


def test_bounded_replay_stops_at_its_bounds_while_writes_continue_and_resumes(
    endpoints: Endpoints, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=3)
    publish(endpoints, topic, mixed_events(900, seed=34))
    assert min(end_offsets(endpoints.bootstrap_servers, topic)) >= 200
    writing = threading.Event()
    writing.set()
    kafka = KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers)
    registry = RegistrySettings(url=endpoints.registry_url)

    def keep_writing() -> None:
        with EventProducer(kafka=kafka, registry=registry) as producer:
            events = mixed_events(200, seed=35)
            i = 0
            while writing.is_set():
                producer.publish(events[i % 200], topic=topic).result(timeout=30)
                i += 1

    writer = threading.Thread(target=keep_writing, daemon=True)
    writer.start()
    seen: dict[int, list[int]] = defaultdict(list)
    stop = threading.Event()
    handlers = Handlers()

    @handlers.on(*ALL)
    def handle(event: Event, ctx: MessageContext) -> None:
        seen[ctx.partition].append(ctx.offset)
        if sum(len(v) for v in seen.values()) == 150:
            stop.set()  # interrupt the first run part-way

    try:
        replay = BoundedReplay(
            topic=topic, start="50", until="200", handlers=handlers, kafka=kafka, registry=registry
        )
        first = replay.run(stop=stop)
        assert first.processed < 3 * 150
        resumed = BoundedReplay(
            topic=topic,
            start="50",
            until="200",
            handlers=handlers,
            kafka=kafka,
            registry=registry,
            name=replay.name,
        ).run()
        assert writer.is_alive()  # it ended on its bounds, not because the writes stopped
        assert resumed.resumed
        # [50, 200) on every partition, each record once across the two runs, in offset order.
        assert {p: offsets for p, offsets in seen.items()} == {p: list(range(50, 200)) for p in range(3)}
        assert first.processed + resumed.processed == 3 * 150

        snapshot = end_offsets(endpoints.bootstrap_servers, topic)
        copy = new_topic(partitions=1)
        copied = BoundedReplay(
            topic=topic, start="earliest", to_topic=copy, kafka=kafka, types=frozenset({"OrderPlaced"})
        ).run()
        assert writer.is_alive()
        later = end_offsets(endpoints.bootstrap_servers, topic)
        assert all(c >= s for c, s in zip(later, snapshot, strict=True))
        assert sum(e for _s, e in copied.ranges.values()) >= sum(snapshot)
        assert copied.processed == sum(e for _s, e in copied.ranges.values())  # stopped at the snapshot
        assert copied.delivered + copied.skipped == copied.processed
        records = read_records(endpoints.bootstrap_servers, [copy], copied.delivered)
        assert {dict(header_pairs(m))["ce_type"] for m in records} == {b"OrderPlaced"}
    finally:
        writing.clear()
        writer.join(30)


def test_dlq_redrive_sends_back_to_the_failing_group_and_guards_loops(
    endpoints: Endpoints, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=2)
    dlq = new_topic(partitions=1, name=f"{topic}.dlq")
    ids = publish(endpoints, topic, mixed_events(100, seed=36))
    broken = threading.Event()
    broken.set()
    handled: list[tuple[uuid.UUID, bytes]] = []
    handlers = Handlers()

    @handlers.on(*ALL)
    def handle(event: Event, ctx: MessageContext) -> None:
        if broken.is_set() or ctx.envelope.event_id == ids[0]:
            raise DeadLetter("downstream refused it")
        handled.append((ctx.envelope.event_id, dict(ctx.headers).get("evstream.redrive.count", b"")))

    group = f"g-{uuid.uuid4().hex[:8]}"
    assert runner(endpoints, group, handlers, topic, redrive=True).run(until_idle_s=2).dead_lettered == 100
    back = f"{topic}.{group}.redrive"  # the group's own redrive topic, declared with its retry topics
    ends = end_offsets(endpoints.bootstrap_servers, topic)
    kafka = KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers)

    dry = redrive(kafka, dlq, dry_run=True)
    assert (dry.total_sent, sum(end_offsets(endpoints.bootstrap_servers, back))) == (100, 0)
    sent = redrive(kafka, dlq)
    assert sent.sent == {back: 100}
    assert sum(end_offsets(endpoints.bootstrap_servers, back)) == 100
    assert end_offsets(endpoints.bootstrap_servers, topic) == ends  # never the shared source topic
    broken.clear()  # the downstream is fixed, except for one event
    stats = runner(endpoints, group, handlers, topic).run(until_idle_s=2)
    assert (stats.handled, stats.dead_lettered) == (99, 1)
    assert sorted(i for i, _ in handled) == sorted(ids[1:])
    assert {count for _, count in handled} == {b"1"}

    guarded = redrive(kafka, dlq, max_redrives=1)  # only the record that came back is new
    assert guarded.total_sent == 0
    ((record, why),) = guarded.refused
    assert record.redrive_count == 1
    assert "redriven 1 times already (max 1)" in why
    assert redrive(kafka, dlq).total_sent == 0  # nothing new since the last run


def test_dlq_redrive_of_selected_records_sends_exactly_those_and_keeps_the_rest_redrivable(
    endpoints: Endpoints, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=1)
    dlq = new_topic(partitions=1, name=f"{topic}.dlq")
    publish(endpoints, topic, mixed_events(5, seed=39))
    group = f"g-{uuid.uuid4().hex[:8]}"
    back = f"{topic}.{group}.redrive"
    handlers = Handlers()

    @handlers.on(*ALL)
    def refuse(event: Event, ctx: MessageContext) -> None:
        raise DeadLetter("downstream refused it")

    assert runner(endpoints, group, handlers, topic, redrive=True).run(until_idle_s=1).dead_lettered == 5
    bootstrap = endpoints.bootstrap_servers
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    env = {"EVSTREAM_BOOTSTRAP_SERVERS": bootstrap}
    letters = read_dead_letters(kafka, dlq)
    assert [r.offset for r in letters] == [0, 1, 2, 3, 4]
    chosen = [letters[1], letters[3]]

    dry = redrive(kafka, dlq, only={(0, 1), (0, 3)}, dry_run=True)
    assert [(r.partition, r.offset) for r in dry.redriven] == [(0, 1), (0, 3)]
    assert end_offsets(bootstrap, back) == [0]  # a dry run sends nothing
    chosen_args = ("--offset", "0:1", "--offset", "0:3")
    proc = run_cli("dlq", "redrive", "--dlq", dlq, *chosen_args, "-o", "json", env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["sent"], out["redriven"], out["refused"]) == ({back: 2}, [[0, 1], [0, 3]], [])
    assert end_offsets(bootstrap, back) == [2]  # exactly the two chosen
    for offset, letter in zip((0, 1), chosen, strict=True):
        headers = dict(header_pairs(record_at(bootstrap, back, 0, offset)))
        assert headers["ce_id"].decode() == letter.event_id
        assert headers["evstream.redrive.count"] == b"1"
    redrive_group = f"evstream-redrive.{dlq}"
    assert committed_offsets(bootstrap, redrive_group, dlq, 1) == [-1001]  # the position did not move
    missing = run_cli("dlq", "redrive", "--dlq", dlq, "--offset", "0:99", env=env)
    assert missing.returncode == 2
    assert f"no dead letter at {dlq}[0]@99" in one_line_error(missing)

    # still failing: the two copies come back (DLQ offsets 5, 6) with redrive count 1
    assert runner(endpoints, group, handlers, topic).run(until_idle_s=3).dead_lettered == 2
    guarded = run_cli(
        "dlq", "redrive", "--dlq", dlq, "--offset", "0:5", "--max-redrives", "1", "-o", "json", env=env
    )
    assert guarded.returncode == 0, guarded.stderr
    refused = json.loads(guarded.stdout)
    assert (refused["sent"], refused["redriven"]) == ({}, [])
    ((why,),) = [[r["why"]] for r in refused["refused"]]
    assert "redriven 1 times already (max 1)" in why
    assert end_offsets(bootstrap, back) == [2]

    # a later filtered redrive finds the three not chosen (and, as documented, the chosen two again)
    later = redrive(kafka, dlq, max_redrives=1)
    assert later.sent == {back: 5}
    assert [r.offset for r in later.redriven] == [0, 1, 2, 3, 4]
    assert sorted(r.offset for r, _ in later.refused) == [5, 6]
    assert end_offsets(bootstrap, back) == [7]
    assert end_offsets(bootstrap, topic) == [5]
    assert committed_offsets(bootstrap, redrive_group, dlq, 1) == [7]


def test_rebuilt_projection_equals_the_live_one_row_by_row(
    endpoints: Endpoints, new_topic: TopicFactory, tmp_path: Path
) -> None:
    topic = new_topic(partitions=3)
    publish_deliveries(endpoints, topic, mixed_events(1500, seed=37))
    raw = Producer({"bootstrap.servers": endpoints.bootstrap_servers})
    raw.produce(
        topic, value=b"garbage", key=b"order-x", headers=Envelope(event_type="OrderPlaced").to_headers()
    )
    assert raw.flush(30) == 0  # history holds a poison record: dead-lettered live, skipped on rebuild
    db = tmp_path / "orders.db"
    live = OrderProjection(db, "order_state")
    runner(endpoints, f"orders-view-{uuid.uuid4().hex[:6]}", live.handlers, topic).run(until_idle_s=2)
    rows = live.rows()
    assert len(rows) > 250  # one row per order seen
    assert {r[2] for r in rows} >= {"placed", "paid", "shipped", "cancelled"}

    rebuilt = OrderProjection(db, "order_state_rebuild")
    result = BoundedReplay(
        topic=topic,
        start="earliest",
        handlers=rebuilt.handlers,
        kafka=KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers),
        registry=RegistrySettings(url=endpoints.registry_url),
    ).run()
    assert result.delivered == 1000  # the order events (the rest are customer events: skipped)
    assert (result.skipped, result.undecodable) == (500, 1)
    assert compare(db, "order_state", "order_state_rebuild") == []
    assert rebuilt.rows() == rows
    live.close()
    rebuilt.close()
    swap(db, "order_state", "order_state_rebuild")
    assert OrderProjection(db, "order_state").rows() == rows


def test_bad_input_gets_one_line_and_changes_nothing(
    endpoints: Endpoints, new_topic: TopicFactory, tmp_path: Path
) -> None:
    topic = new_topic(partitions=2)
    publish(endpoints, topic, mixed_events(40, seed=38))
    group = f"g-{uuid.uuid4().hex[:8]}"
    consume_all(endpoints, group, topic)
    before = committed_offsets(endpoints.bootstrap_servers, group, topic, 2)
    env = {"EVSTREAM_BOOTSTRAP_SERVERS": endpoints.bootstrap_servers}
    malformed = tmp_path / "plan.json"
    malformed.write_text(json.dumps({"version": 1, "group_id": group, "topic": topic}))
    not_json = tmp_path / "notjson.json"
    not_json.write_text("{not json")
    cases = {
        (
            "plan",
            "--group",
            "no-such-group-x",
            "--topic",
            topic,
            "--to-earliest",
        ): "no consumer group 'no-such",
        (
            "plan",
            "--group",
            group,
            "--topic",
            "no-such-topic-x",
            "--to-earliest",
        ): "no topic 'no-such-topic-x'",
        (
            "apply",
            "--group",
            group,
            "--topic",
            topic,
            "--to-datetime",
            "2999-01-01T00:00:00Z",
        ): "in the future",
        (
            "apply",
            "--group",
            group,
            "--topic",
            topic,
            "--to-offset",
            "999999",
        ): "offset 999999 is past the end",
        (
            "apply",
            "--group",
            group,
            "--topic",
            topic,
            "--to-datetime",
            "2026-01-01T00:00:00",
        ): "needs a timezone",
        ("apply", "--group", group, "--topic", topic, "--by-duration", "an hour"): "not an ISO-8601 duration",
        ("apply", "--group", group, "--topic", topic): "give exactly one of --to-earliest",
        ("apply", str(malformed)): "is not a replay plan: target: Field required",
        ("apply", str(not_json)): "is not a replay plan",
        ("apply", str(tmp_path / "missing.json")): "cannot read plan file",
        ("run", "--topic", topic, "--from", "5000", "--to-topic", "x"): "--from 5000 is outside",
        ("run", "--topic", topic, "--from", "earliest"): "give exactly one of a handler",
    }
    for args, message in cases.items():
        proc = run_cli("replay", *args, env=env)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in one_line_error(proc), (args, proc.stderr)
    assert committed_offsets(endpoints.bootstrap_servers, group, topic, 2) == before
    unknown_dlq = run_cli("dlq", "list", "--dlq", "no-such-dlq-x", env=env)
    assert unknown_dlq.returncode == 2
    assert "no topic 'no-such-dlq-x'" in one_line_error(unknown_dlq)


def test_plan_save_and_apply_from_the_cli(
    endpoints: Endpoints, new_topic: TopicFactory, tmp_path: Path
) -> None:
    topic = new_topic(partitions=2)
    publish(endpoints, topic, mixed_events(60, seed=39))
    group = f"g-{uuid.uuid4().hex[:8]}"
    consume_all(endpoints, group, topic)
    env = {"EVSTREAM_BOOTSTRAP_SERVERS": endpoints.bootstrap_servers}
    plan_file = tmp_path / "plan.json"
    planned = run_cli(
        "replay", "plan", "-g", group, "-t", topic, "--shift-by", "-10", "--save", str(plan_file),
        "-o", "json", env=env,
    )  # fmt: skip
    assert planned.returncode == 0, planned.stderr
    shown = json.loads(planned.stdout)
    assert shown["replayed"] == 20
    assert [p["target"] for p in shown["partitions"]] == [p["current"] - 10 for p in shown["partitions"]]
    dry = run_cli("replay", "apply", str(plan_file), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing changed" in dry.stdout
    ends = end_offsets(endpoints.bootstrap_servers, topic)
    assert committed_offsets(endpoints.bootstrap_servers, group, topic, 2) == ends
    applied = run_cli("replay", "apply", str(plan_file), env=env)
    assert applied.returncode == 0, applied.stderr
    assert committed_offsets(endpoints.bootstrap_servers, group, topic, 2) == [e - 10 for e in ends]
    stale = run_cli("replay", "apply", str(plan_file), env=env)  # committed offsets moved since the plan
    assert stale.returncode == 1
    assert "the plan is stale" in one_line_error(stale)
