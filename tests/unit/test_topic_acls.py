"""ACLs as code: the declaration and the plan (pure, no broker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evstream.errors import TopicsFileError
from evstream.topics.acls import Acl, declared_acls, plan_acls
from evstream.topics.spec import load_topics_file

FILE = """
topics: []
acls:
  - principal: User:app
    allow:
      - {topic: orders, operations: [write, describe]}
      - {topic_prefix: orders., operations: [read]}
      - {group_prefix: orders-, operations: [read]}
      - {transactional_id_prefix: tx-, operations: [write, describe]}
      - {cluster: true, operations: [idempotent_write]}
"""


def test_declared_rules_and_plan(tmp_path: Path) -> None:
    path = tmp_path / "topics.yaml"
    path.write_text(FILE)
    spec = load_topics_file(path)
    assert spec.acls is not None
    rules = declared_acls(spec.acls)
    assert Acl("User:app", "topic", "orders.", "prefixed", "read") in rules
    assert Acl("User:app", "cluster", "kafka-cluster", "literal", "idempotent_write") in rules
    assert len(rules) == 7
    stale = Acl("User:old", "topic", "orders", "literal", "read")
    plan = plan_acls(spec.acls, [rules[0], stale])
    actions = {(c.acl, c.action) for c in plan}
    assert (rules[0], "unchanged") in actions
    assert (stale, "remove") in actions
    assert sum(c.action == "add" for c in plan) == 6
    assert plan_acls(spec.acls, rules) == [type(plan[0])(r, "unchanged") for r in rules]


def test_a_file_without_acls_manages_none(tmp_path: Path) -> None:
    path = tmp_path / "topics.yaml"
    path.write_text("topics: [{name: a, partitions: 1}]\n")
    assert load_topics_file(path).acls is None


@pytest.mark.parametrize(
    ("grant", "message"),
    [
        ("{topic: a, group: b, operations: [read]}", "exactly one of"),
        ("{topic: a, operations: [fly]}", "operations"),
        ("{topic: a, operations: []}", "operations"),
        ("{topic: a, operation: [read]}", "unknown key"),
    ],
)
def test_bad_grants_are_one_line(tmp_path: Path, grant: str, message: str) -> None:
    path = tmp_path / "topics.yaml"
    path.write_text(f"topics: []\nacls:\n  - principal: User:app\n    allow: [{grant}]\n")
    with pytest.raises(TopicsFileError, match=message) as info:
        load_topics_file(path)
    assert "\n" not in str(info.value)
