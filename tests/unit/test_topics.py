from __future__ import annotations

import re
from pathlib import Path

import pytest

from evstream import PartitionDecreaseError, ReplicationChangeError, TopicsFileError
from evstream.topics import ClusterTopic, TopicSpec, load_topics_file, plan_changes
from tests.helpers import one_line_error, run_cli


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(text)
    return path


def test_demo_topics_file_loads(repo_root: Path) -> None:
    declared = load_topics_file(repo_root / "deploy" / "topics.yaml")
    names = [t.name for t in declared.topics]
    assert names == ["orders", "customers", "customer-tiers", "orders.dlq", "customers.dlq"]
    assert declared.topics[0].desired_configs() == {"retention.ms": "604800000", "cleanup.policy": "delete"}


def test_configs_are_stringified(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "topics:\n  - name: a\n    partitions: 2\n"
        "    configs: {min.insync.replicas: 2, unclean.leader.election.enable: false}\n",
    )
    spec = load_topics_file(path).topics[0]
    assert spec.desired_configs() == {"min.insync.replicas": "2", "unclean.leader.election.enable": "false"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("topics:\n  - name: a\n    partitions: 1\n    retention: 5\n", "topic 'a': unknown key 'retention'"),
        (
            "topics:\n  - name: a\n    partitions: 0\n",
            "topic 'a': partitions: Input should be greater than or equal to 1",
        ),
        (
            "topics:\n  - name: a\n    partitions: 1\n  - name: a\n    partitions: 2\n",
            "topic 'a' is declared twice",
        ),
        ("topic:\n  - name: a\n", "unknown key 'topic'"),
        ("topics: [\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping with a 'topics' list"),
        (
            "topics:\n  - name: a\n    partitions: 1\n    retention_ms: 5\n    configs: {retention.ms: 6}\n",
            "retention.ms is set twice",
        ),
        (
            "topics:\n  - name: 'bad name!'\n    partitions: 1\n",
            "topic 'bad name!': name: String should match",
        ),
    ],
)
def test_malformed_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TopicsFileError, match=re.escape(message)):
        load_topics_file(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TopicsFileError, match="no such file"):
        load_topics_file(tmp_path / "nope.yaml")


def test_cli_rejects_unknown_key_in_one_line_before_touching_kafka(tmp_path: Path) -> None:
    path = write(tmp_path, "topics:\n  - name: orders\n    partitions: 3\n    replicas: 3\n")
    # An unreachable broker: the file must be rejected before any connection is tried.
    proc = run_cli("topics", "apply", "-f", str(path), "-b", "127.0.0.1:1", timeout=60)
    assert proc.returncode == 2
    assert one_line_error(proc) == f"error: {path}: topic 'orders': unknown key 'replicas'"


SPEC = TopicSpec(name="orders", partitions=6, retention_ms=1000, cleanup_policy="delete")


def test_plan_creates_missing_topic() -> None:
    [change] = plan_changes([SPEC], {})
    assert change.action == "create"
    assert change.current_partitions is None
    assert {c.key: c.desired for c in change.config_changes} == {
        "retention.ms": "1000",
        "cleanup.policy": "delete",
    }


def test_plan_unchanged_when_cluster_matches() -> None:
    current = ClusterTopic("orders", 6, 1, {"retention.ms": "1000", "cleanup.policy": "delete", "x": "y"})
    [change] = plan_changes([SPEC], {"orders": current})
    assert change.action == "unchanged"
    assert change.config_changes == ()


def test_plan_grows_partitions_and_sets_changed_configs_only() -> None:
    current = ClusterTopic("orders", 3, 1, {"retention.ms": "50", "cleanup.policy": "delete"})
    [change] = plan_changes([SPEC], {"orders": current})
    assert change.action == "update"
    assert change.adds_partitions
    assert [(c.key, c.current, c.desired) for c in change.config_changes] == [("retention.ms", "50", "1000")]


def test_plan_refuses_partition_decrease() -> None:
    current = ClusterTopic("orders", 12, 1, {})
    with pytest.raises(PartitionDecreaseError, match="cannot decrease partitions from 12 to 6"):
        plan_changes([SPEC], {"orders": current})


def test_plan_refuses_replication_change() -> None:
    spec = TopicSpec(name="orders", partitions=6, replication_factor=3)
    with pytest.raises(ReplicationChangeError, match="replication factor is 1, declared 3"):
        plan_changes([spec], {"orders": ClusterTopic("orders", 6, 1, {})})
