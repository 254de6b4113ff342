"""The local stack manager against real JVM processes: lifecycle, idempotent up, warm cache, demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evstream import StackNotRunningError
from evstream.stack import LocalStack, StackState, default_data_dir
from evstream.stack.processes import is_alive
from tests.conftest import Endpoints
from tests.helpers import one_line_error, run_cli
from tests.kafka_helpers import end_offsets


@pytest.fixture
def local_stack(endpoints: Endpoints) -> LocalStack:
    if not endpoints.source.startswith("local stack"):
        pytest.skip(f"the session broker is not the shared local stack ({endpoints.source})")
    return LocalStack(default_data_dir())


def test_status_and_repeated_up_reuse_the_running_stack(local_stack: LocalStack) -> None:
    before = local_stack.state()
    status = run_cli("stack", "status", "--data-dir", str(local_stack.data_dir), "-o", "json")
    assert status.returncode == 0, status.stderr
    rows = {row["name"]: row for row in json.loads(status.stdout)}
    assert rows["kafka-1"]["alive"] is True
    assert rows["kafka-1"]["endpoint"] == before.bootstrap_servers
    assert rows["registry"]["endpoint"] == before.registry_url

    again = run_cli("stack", "up", "--data-dir", str(local_stack.data_dir), "-o", "json")
    assert again.returncode == 0, again.stderr
    info = json.loads(again.stdout)
    assert info["bootstrap_servers"] == before.bootstrap_servers
    expected = {f"kafka-{n.node_id}": n.pid for n in before.nodes}
    if before.registry is not None:
        expected["registry"] = before.registry.pid
    assert info["pids"] == expected


def test_warm_cache_needs_no_maven(local_stack: LocalStack, tmp_path: Path) -> None:
    # PATH without mvn (or anything else): resolving the jars again must not run Maven.
    cache = local_stack.state().kafka_libs.parents[1]
    proc = run_cli("stack", "fetch", env={"PATH": str(tmp_path), "EVSTREAM_CACHE_DIR": str(cache)})
    assert proc.returncode == 0, proc.stderr
    assert "kafka jars:" in proc.stdout
    assert "registry:" in proc.stdout


def test_demo_publishes_and_consumes(endpoints: Endpoints, repo_root: Path) -> None:
    env = {
        "EVSTREAM_BOOTSTRAP_SERVERS": endpoints.bootstrap_servers,
        "EVSTREAM_REGISTRY_URL": endpoints.registry_url,
    }
    proc = run_cli(
        "demo", "-f", str(repo_root / "deploy" / "topics.yaml"), "--orders", "3", env=env | {"COLUMNS": "250"}
    )
    assert proc.returncode == 0, proc.stderr
    # 2 customers register; orders 1 and 2 are placed, paid and shipped; order 3 is placed and cancelled.
    assert f"published 10 events to {endpoints.bootstrap_servers}" in proc.stdout
    assert "read back 10 events" in proc.stdout
    for event_type, times in [
        ("CustomerRegistered", 2),
        ("OrderPlaced", 3),
        ("PaymentCaptured", 2),
        ("OrderShipped", 2),
        ("OrderCancelled", 1),
    ]:
        assert proc.stdout.count(event_type) == times, event_type


def test_demo_with_unreachable_registry_writes_nothing(endpoints: Endpoints, repo_root: Path) -> None:
    topics = repo_root / "deploy" / "topics.yaml"
    env = {
        "EVSTREAM_BOOTSTRAP_SERVERS": endpoints.bootstrap_servers,
        "EVSTREAM_REGISTRY_URL": "http://127.0.0.1:1",
    }
    assert run_cli("topics", "apply", "-f", str(topics), env=env).returncode == 0
    before = end_offsets(endpoints.bootstrap_servers, "orders")
    proc = run_cli("demo", "-f", str(topics), env=env)
    assert proc.returncode == 1
    assert one_line_error(proc).startswith("error: schema registry at http://127.0.0.1:1:")
    assert end_offsets(endpoints.bootstrap_servers, "orders") == before


def test_private_stack_lifecycle_without_registry(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "stack", start_timeout=120)
    state = stack.up(registry=False)
    try:
        assert state.registry is None
        assert len(state.nodes) == 1
        assert StackState.load(tmp_path / "stack") == state
        [row] = stack.status()
        assert row.alive
        assert row.endpoint == state.bootstrap_servers
        assert (state.nodes[0].config_file.parent / "logs" / "server.log").stat().st_size > 0
    finally:
        stopped = stack.down()
    assert [row.name for row in stopped] == ["kafka-1"]
    assert state.nodes[0].pid is not None
    assert not is_alive(state.nodes[0].pid)
    # `down` keeps the data: the next `up` restarts this cluster (see test_stack_durable.py).
    assert (tmp_path / "stack" / "cluster.json").exists()
    assert (state.nodes[0].log_dir / "meta.properties").exists()
    with pytest.raises(StackNotRunningError, match="is stopped \\(its data is kept\\)"):
        stack.status()
    stack.reset()
    assert not (tmp_path / "stack" / "cluster.json").exists()
