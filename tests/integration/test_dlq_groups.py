"""Dead letters per consumer group on the real stack: the shared `<topic>.dlq` names the group that
failed each record, and `dlq redrive` sends it back to that group only (`<topic>.<group>.redrive`)."""

from __future__ import annotations

import json
import uuid

from confluent_kafka import Producer

from evstream import DeadLetter, KafkaSettings
from evstream.consumers import Handlers, MessageContext
from evstream.consumers.replay.deadletters import read_dead_letters
from evstream.schemas.events import Event
from tests.conftest import Endpoints, TopicFactory
from tests.consumer_helpers import ALL, publish, runner
from tests.factories import mixed_events
from tests.helpers import one_line_error, run_cli
from tests.kafka_helpers import end_offsets

Handled = list[tuple[uuid.UUID, bytes]]  # event id, evstream.redrive.count


def group_handlers(handled: Handled, failing: set[uuid.UUID]) -> Handlers:
    """Records what it handled; refuses (dead-letters) the event ids in ``failing``."""
    handlers = Handlers()

    @handlers.on(*ALL)
    def handle(event: Event, ctx: MessageContext) -> None:
        if ctx.envelope.event_id in failing:
            raise DeadLetter("downstream refused it")
        handled.append((ctx.envelope.event_id, dict(ctx.headers).get("evstream.redrive.count", b"")))

    return handlers


def test_redrive_reaches_only_the_group_that_failed_the_event(
    endpoints: Endpoints, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=2)
    dlq = new_topic(partitions=1, name=f"{topic}.dlq")
    ids = publish(endpoints, topic, mixed_events(6, seed=61))
    bootstrap = endpoints.bootstrap_servers
    env = {"EVSTREAM_BOOTSTRAP_SERVERS": bootstrap}
    ok, failing = f"ok-{uuid.uuid4().hex[:6]}", f"bad-{uuid.uuid4().hex[:6]}"
    ok_handled: Handled = []
    bad_handled: Handled = []
    broken = {ids[2]}
    ok_run = runner(endpoints, ok, group_handlers(ok_handled, set()), topic, redrive=True).run(until_idle_s=2)
    bad_run = runner(endpoints, failing, group_handlers(bad_handled, broken), topic, redrive=True).run(
        until_idle_s=2
    )
    assert (ok_run.handled, ok_run.dead_lettered) == (6, 0)
    assert (bad_run.handled, bad_run.dead_lettered) == (5, 1)

    listed = run_cli("dlq", "list", "--dlq", dlq, "-o", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    ((row,),) = [json.loads(listed.stdout)]
    assert (row["group"], row["event_id"]) == (failing, str(ids[2]))
    none = run_cli("dlq", "list", "--dlq", dlq, "--group", ok, "-o", "json", env=env)
    assert json.loads(none.stdout) == []
    shown = run_cli("dlq", "show", "--dlq", dlq, "--offset", "0", "--no-decode", env=env)
    assert json.loads(shown.stdout)["headers"]["evstream.dlq.group"] == failing

    source_ends = end_offsets(bootstrap, topic)
    sent = run_cli("dlq", "redrive", "--dlq", dlq, "-o", "json", env=env)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["sent"] == {f"{topic}.{failing}.redrive": 1}
    assert end_offsets(bootstrap, topic) == source_ends  # not the shared source topic
    assert sum(end_offsets(bootstrap, f"{topic}.{ok}.redrive")) == 0

    broken.clear()  # the failing group's downstream is fixed
    again_ok = runner(endpoints, ok, group_handlers(ok_handled, set()), topic).run(until_idle_s=3)
    again_bad = runner(endpoints, failing, group_handlers(bad_handled, broken), topic).run(until_idle_s=3)
    assert (again_ok.consumed, len(ok_handled)) == (0, 6)  # the other group's count is unchanged
    assert (again_bad.handled, again_bad.dead_lettered) == (1, 0)
    assert bad_handled[-1] == (ids[2], b"1")  # the same event id, redriven once
    assert sorted(i for i, _ in bad_handled) == sorted(ids)


def test_when_both_groups_fail_it_each_redrive_reaches_its_own_group(
    endpoints: Endpoints, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=2)
    dlq = new_topic(partitions=1, name=f"{topic}.dlq")
    ids = publish(endpoints, topic, mixed_events(4, seed=62))
    bootstrap = endpoints.bootstrap_servers
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    env = {"EVSTREAM_BOOTSTRAP_SERVERS": bootstrap}
    first, second = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    handled: dict[str, Handled] = {first: [], second: []}
    broken = {ids[1]}
    for group in (first, second):
        stats = runner(endpoints, group, group_handlers(handled[group], broken), topic, redrive=True).run(
            until_idle_s=2
        )
        assert (stats.handled, stats.dead_lettered) == (3, 1)
    assert sorted(r.group for r in read_dead_letters(kafka, dlq)) == sorted([first, second])
    source_ends = end_offsets(bootstrap, topic)

    # one group at a time (--group): each with its own redrive position
    for group in (first, second):
        proc = run_cli("dlq", "redrive", "--dlq", dlq, "--group", group, "-o", "json", env=env)
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert (out["sent"], out["passed_over"]) == ({f"{topic}.{group}.redrive": 1}, 1)
    assert end_offsets(bootstrap, topic) == source_ends
    broken.clear()
    for group in (first, second):
        stats = runner(endpoints, group, group_handlers(handled[group], broken), topic).run(until_idle_s=3)
        assert (stats.consumed, stats.handled) == (1, 1)  # its own copy, once
        assert handled[group][-1] == (ids[1], b"1")
        assert sum(end_offsets(bootstrap, f"{topic}.{group}.redrive")) == 1


def test_redrive_refuses_a_missing_redrive_topic_and_an_old_dead_letter_without_a_group(
    endpoints: Endpoints, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=1)
    dlq = new_topic(partitions=1, name=f"{topic}.dlq")
    ids = publish(endpoints, topic, mixed_events(2, seed=63))
    bootstrap = endpoints.bootstrap_servers
    env = {"EVSTREAM_BOOTSTRAP_SERVERS": bootstrap}
    group = f"g-{uuid.uuid4().hex[:8]}"
    handled: Handled = []
    # no redrive topic declared for this group
    stats = runner(endpoints, group, group_handlers(handled, {ids[0]}), topic).run(until_idle_s=2)
    assert stats.dead_lettered == 1
    missing = run_cli("dlq", "redrive", "--dlq", dlq, env=env)
    assert missing.returncode == 2
    assert f"redrive topic {topic}.{group}.redrive does not exist" in one_line_error(missing)
    assert end_offsets(bootstrap, topic) == [2]  # nothing sent anywhere

    # a dead letter written before dead letters named their group
    (letter,) = read_dead_letters(KafkaSettings(bootstrap_servers=bootstrap), dlq)
    producer = Producer({"bootstrap.servers": bootstrap})
    old_headers: list[tuple[str, str | bytes | None]] = [
        (k, v) for k, v in letter.headers if k != "evstream.dlq.group"
    ]
    producer.produce(dlq, value=letter.value, key=letter.key, headers=old_headers)
    assert producer.flush(30) == 0
    listed = run_cli("dlq", "list", "--dlq", dlq, "-o", "json", env=env)
    assert [r["group"] for r in json.loads(listed.stdout)] == [group, ""]  # still readable
    refused = run_cli("dlq", "redrive", "--dlq", dlq, "--offset", "0:1", env=env)
    assert refused.returncode == 2
    assert "name no consumer group" in one_line_error(refused)
    assert "--to-topic" in one_line_error(refused)
    target = f"{topic}.{group}.redrive"
    new_topic(partitions=1, name=target)  # declared now
    chosen = run_cli(
        "dlq", "redrive", "--dlq", dlq, "--offset", "0:1", "--to-topic", target, "-o", "json", env=env
    )
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout)["sent"] == {target: 1}
    assert end_offsets(bootstrap, target) == [1]
    assert end_offsets(bootstrap, topic) == [2]
