"""Topics as code against the real broker: create, idempotent re-apply, grow, alter, refuse shrink."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from evstream import PartitionDecreaseError
from evstream.topics import ClusterTopic, apply_changes, describe_topics, load_topics_file, plan_changes
from tests.conftest import Endpoints
from tests.helpers import one_line_error, run_cli, wait_until


@pytest.fixture
def names(admin: AdminClient) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    pair = (f"tac-orders-{suffix}", f"tac-audit-{suffix}")
    yield pair
    existing = [n for n in pair if n in admin.list_topics(timeout=10).topics]
    if existing:
        for future in admin.delete_topics(existing).values():
            future.result(timeout=30)


def declare(tmp_path: Path, orders: str, audit: str, *, partitions: int, retention: int) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(
        f"""topics:
  - name: {orders}
    partitions: {partitions}
    replication_factor: 1
    retention_ms: {retention}
    cleanup_policy: delete
  - name: {audit}
    partitions: 1
    cleanup_policy: compact
    configs:
      min.compaction.lag.ms: 60000
"""
    )
    return path


def test_apply_is_idempotent_grows_and_alters(
    admin: AdminClient, names: tuple[str, str], tmp_path: Path
) -> None:
    orders, audit = names
    declared = load_topics_file(declare(tmp_path, orders, audit, partitions=3, retention=3_600_000))
    specs = declared.topics

    first = plan_changes(specs, describe_topics(admin, [orders, audit]))
    assert [c.action for c in first] == ["create", "create"]
    apply_changes(admin, first)

    def both() -> dict[str, ClusterTopic] | None:
        found = describe_topics(admin, [orders, audit])
        return found if len(found) == 2 else None

    now = wait_until(both, timeout=30, what="both topics visible")
    assert now[orders].partitions == 3
    assert now[orders].configs["retention.ms"] == "3600000"
    assert now[audit].configs["cleanup.policy"] == "compact"
    assert now[audit].configs["min.compaction.lag.ms"] == "60000"

    again = plan_changes(specs, now)
    assert [c.action for c in again] == ["unchanged", "unchanged"]

    grown = load_topics_file(declare(tmp_path, orders, audit, partitions=5, retention=7_200_000)).topics
    change = plan_changes(grown, now)
    assert [c.action for c in change] == ["update", "unchanged"]
    assert [(cc.key, cc.current, cc.desired) for cc in change[0].config_changes] == [
        ("retention.ms", "3600000", "7200000")
    ]
    apply_changes(admin, change)

    def updated() -> bool:
        topic = describe_topics(admin, [orders])[orders]
        return topic.partitions == 5 and topic.configs["retention.ms"] == "7200000"

    wait_until(updated, timeout=30, what="5 partitions and new retention")
    assert [c.action for c in plan_changes(grown, describe_topics(admin, [orders, audit]))] == [
        "unchanged"
    ] * 2


def test_partition_decrease_is_refused_and_nothing_changes(
    endpoints: Endpoints, admin: AdminClient, names: tuple[str, str], tmp_path: Path
) -> None:
    orders, audit = names
    path = declare(tmp_path, orders, audit, partitions=4, retention=3_600_000)
    created = run_cli("topics", "apply", "-f", str(path), "-b", endpoints.bootstrap_servers)
    assert created.returncode == 0, created.stderr
    wait_until(lambda: orders in admin.list_topics(timeout=5).topics, timeout=30, what="created")

    shrink = declare(tmp_path, orders, audit, partitions=2, retention=1)
    with pytest.raises(PartitionDecreaseError):
        plan_changes(load_topics_file(shrink).topics, describe_topics(admin, [orders, audit]))
    for command in ("plan", "apply"):
        proc = run_cli("topics", command, "-f", str(shrink), "-b", endpoints.bootstrap_servers)
        assert proc.returncode == 1
        assert one_line_error(proc) == (
            f"error: topic '{orders}': cannot decrease partitions from 4 to 2 "
            "(Kafka cannot remove partitions; create a new topic instead)"
        )
    after = describe_topics(admin, [orders])[orders]
    assert after.partitions == 4
    assert after.configs["retention.ms"] == "3600000"  # the other change in the file was not applied either


def test_cli_plan_apply_list_json(endpoints: Endpoints, names: tuple[str, str], tmp_path: Path) -> None:
    orders, audit = names
    path = declare(tmp_path, orders, audit, partitions=2, retention=60_000)
    plan = run_cli("topics", "plan", "-f", str(path), "-b", endpoints.bootstrap_servers, "-o", "json")
    assert plan.returncode == 0, plan.stderr
    assert [(t["topic"], t["action"]) for t in json.loads(plan.stdout)] == [
        (orders, "create"),
        (audit, "create"),
    ]

    applied = run_cli("topics", "apply", "-f", str(path), "-b", endpoints.bootstrap_servers, "-o", "json")
    assert applied.returncode == 0, applied.stderr
    again = run_cli("topics", "apply", "-f", str(path), "-b", endpoints.bootstrap_servers, "-o", "json")
    assert [t["action"] for t in json.loads(again.stdout)] == ["unchanged", "unchanged"]

    listed = run_cli("topics", "list", "-b", endpoints.bootstrap_servers, "-o", "json")
    rows = {t["topic"]: t for t in json.loads(listed.stdout)}
    assert rows[orders]["partitions"] == 2
    assert rows[audit]["partitions"] == 1
    assert not any(name.startswith("__") for name in rows)


def test_unreachable_cluster_is_one_line(tmp_path: Path, names: tuple[str, str]) -> None:
    path = declare(tmp_path, *names, partitions=1, retention=1000)
    proc = run_cli("topics", "plan", "-f", str(path), "-b", "127.0.0.1:1", timeout=120)
    assert proc.returncode == 1
    assert one_line_error(proc).startswith("error: cannot read cluster metadata:")
