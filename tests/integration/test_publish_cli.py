"""`evstream publish` end to end: JSON in, offsets out, nothing written on bad input."""

from __future__ import annotations

import json
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from evstream.schemas import Envelope
from tests.conftest import Endpoints, TopicFactory
from tests.factories import mixed_events
from tests.helpers import one_line_error, run_cli
from tests.kafka_helpers import end_offsets


def env_for(endpoints: Endpoints) -> dict[str, str]:
    return {
        "EVSTREAM_BOOTSTRAP_SERVERS": endpoints.bootstrap_servers,
        "EVSTREAM_REGISTRY_URL": endpoints.registry_url,
    }


def test_publish_one_event_prints_where_it_landed(endpoints: Endpoints, topic: str) -> None:
    data = {
        "order_id": "o-42",
        "payment_id": "p-1",
        "amount": {"amount_minor": 990, "currency": "GBP"},
        "method": "PAYPAL",
        "captured_at": "2026-11-27T10:00:00Z",
    }
    proc = run_cli(
        "publish",
        topic,
        "--type",
        "PaymentCaptured",
        "--data",
        json.dumps(data),
        "--correlation-id",
        "req-7",
        "-o",
        "json",
        env=env_for(endpoints),
    )
    assert proc.returncode == 0, proc.stderr
    [row] = json.loads(proc.stdout)
    assert row["topic"] == topic
    assert row["type"] == "PaymentCaptured"

    consumer = Consumer({"bootstrap.servers": endpoints.bootstrap_servers, "group.id": "check"})
    consumer.assign([TopicPartition(topic, row["partition"], row["offset"])])
    try:
        msg = consumer.poll(30)
    finally:
        consumer.close()
    assert msg is not None
    assert msg.error() is None
    env = Envelope.from_headers(msg.headers())
    assert str(env.event_id) == row["event_id"]
    assert env.correlation_id == "req-7"
    assert msg.key() == b"o-42"


def test_publish_a_jsonl_file(endpoints: Endpoints, new_topic: TopicFactory, tmp_path: Path) -> None:
    topic = new_topic(partitions=3)
    events = mixed_events(300)
    path = tmp_path / "events.jsonl"
    path.write_text(
        "\n".join(json.dumps({"type": e.event_type(), "data": e.model_dump(mode="json")}) for e in events)
    )
    proc = run_cli("publish", topic, "--file", str(path), "-o", "json", env=env_for(endpoints))
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["type"] for r in rows] == [e.event_type() for e in events]
    assert sum(end_offsets(endpoints.bootstrap_servers, topic)) == 300


def test_one_invalid_line_publishes_nothing(endpoints: Endpoints, topic: str, tmp_path: Path) -> None:
    events = mixed_events(60)
    lines = [json.dumps({"type": e.event_type(), "data": e.model_dump(mode="json")}) for e in events]
    broken = json.loads(lines[56])
    broken["data"]["order_id" if "order_id" in broken["data"] else "customer_id"] = ""
    lines[56] = json.dumps(broken)
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines))
    proc = run_cli("publish", topic, "--file", str(path), env=env_for(endpoints))
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert line.startswith(f"error: {path}:57: {broken['type']}: field '")
    assert "String should have at least 1 character" in line
    assert end_offsets(endpoints.bootstrap_servers, topic) == [0, 0, 0]


def test_bad_command_lines_exit_2_without_a_broker(tmp_path: Path) -> None:
    unreachable = {"EVSTREAM_BOOTSTRAP_SERVERS": "127.0.0.1:1", "EVSTREAM_REGISTRY_URL": "http://127.0.0.1:1"}
    (tmp_path / "bad.jsonl").write_text('{"type": "OrderPlaced"\n')
    cases = [
        (["--data", "{}"], "error: --data needs --type"),
        (["--type", "OrderPlaced"], "error: give exactly one of --data or --file"),
        (["--type", "Nope", "--data", "{}"], "error: --data: unknown event type 'Nope'"),
        (["--type", "OrderPlaced", "--data", "{nope"], "error: --data: not valid JSON"),
        (["--file", str(tmp_path / "bad.jsonl")], f"error: {tmp_path / 'bad.jsonl'}:1: not valid JSON"),
        (["--file", str(tmp_path / "missing.jsonl")], f"error: {tmp_path / 'missing.jsonl'}: No such file"),
    ]
    for args, message in cases:
        proc = run_cli("publish", "orders", *args, env=unreachable, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        assert one_line_error(proc).startswith(message), (args, proc.stderr)
