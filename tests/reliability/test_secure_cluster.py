"""The secured 3-node stack (`stack up --nodes 3 --secure`): mTLS between controllers, SASL_SSL
between brokers; a killed partition leader loses no acks=all record of the application user."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from evstream.stack import LocalStack
from evstream.stack.manager import admin_config
from evstream.stack.security import client_properties
from evstream.topics.acls import PrincipalAcls, apply_acl_changes, describe_acls, plan_acls
from tests.helpers import wait_until

pytestmark = [pytest.mark.long, pytest.mark.slow]


@pytest.fixture(scope="module")
def secure_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(tmp_path_factory.mktemp("secure-cluster"), start_timeout=240)
    stack.up(nodes=3, registry=False, secure=True)
    try:
        yield stack
    finally:
        stack.down(purge=True)


def isr(admin: AdminClient, topic: str) -> list[int]:
    try:
        meta = admin.list_topics(topic, timeout=10).topics.get(topic)
    except KafkaException:
        return []
    part = meta.partitions.get(0) if meta is not None and meta.error is None else None
    return sorted(part.isrs) if part is not None else []


def produce(conf: dict[str, Any], topic: str, values: list[bytes]) -> list[Message]:
    producer = Producer({**conf, "acks": "all", "enable.idempotence": True})
    acked: list[Message] = []
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        (errors.append(err) if err is not None else acked.append(msg))

    for value in values:
        producer.produce(topic, value=value, on_delivery=on_delivery)
    assert producer.flush(60) == 0
    assert errors == []
    return acked


def test_secured_acks_all_survives_a_killed_leader_which_rejoins(secure_cluster: LocalStack) -> None:
    state = secure_cluster.state()
    assert state.security_dir is not None
    admin = AdminClient(dict[str, Any](admin_config(state)))
    assert sorted(admin.list_topics(timeout=10).brokers) == [1, 2, 3]
    topic = "secure-rf3"
    admin.create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=3, config={"min.insync.replicas": "2"})]
    )[topic].result(timeout=30)
    wait_until(lambda: isr(admin, topic) == [1, 2, 3], timeout=60, what="full ISR")
    declared = [
        PrincipalAcls.model_validate(
            {
                "principal": "User:app",
                "allow": [
                    {"topic": topic, "operations": ["read", "write", "describe"]},
                    {"group": "secure-check", "operations": ["read"]},
                ],
            }
        )
    ]
    apply_acl_changes(admin, plan_acls(declared, describe_acls(admin)), delete=False)
    app: dict[str, Any] = {
        "bootstrap.servers": state.bootstrap_servers,
        **client_properties(state.security_dir, "app"),
    }

    before = produce(app, topic, [f"before-{i}".encode() for i in range(100)])
    meta = admin.list_topics(topic, timeout=10).topics[topic].partitions[0]
    victim = int(meta.leader)
    secure_cluster.stop_node(victim, sig=signal.SIGKILL)
    survivors = sorted({1, 2, 3} - {victim})
    wait_until(lambda: isr(admin, topic) == survivors, timeout=60, what=f"ISR shrunk to {survivors}")
    during = produce(app, topic, [f"during-{i}".encode() for i in range(100)])
    secure_cluster.start_node(victim)  # rejoins over mTLS (controller) and SASL_SSL (replication)
    wait_until(lambda: isr(admin, topic) == [1, 2, 3], timeout=90, what=f"node {victim} back in ISR")

    consumer = Consumer({**app, "group.id": "secure-check", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got: list[bytes] = []

    def drain() -> bool:
        got.extend(m.value() or b"" for m in consumer.consume(200, timeout=0.5) if m.error() is None)
        return len(got) >= 200

    try:
        wait_until(drain, timeout=60, what="200 records")
    finally:
        consumer.close()
    assert got == [m.value() for m in before + during]
