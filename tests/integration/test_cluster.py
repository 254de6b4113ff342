"""A 3-node KRaft cluster on loopback: RF=3, min ISR 2, a broker killed and brought back; the
gateway answering 503 while min ISR is not met."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, PartitionMetadata

from evstream.stack import LocalStack
from tests.conftest import Endpoints
from tests.gateway_helpers import orders_gateway, token
from tests.helpers import wait_until
from tests.kafka_helpers import end_offsets

pytestmark = [pytest.mark.slow, pytest.mark.long]  # a 3-node cluster: make reliability


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(tmp_path_factory.mktemp("cluster"), start_timeout=180, stop_timeout=10)
    stack.up(nodes=3, registry=False)
    try:
        yield stack
    finally:
        stack.down()


def partition0(admin: AdminClient, topic: str) -> PartitionMetadata | None:
    """Partition 0's metadata, or None while a new topic's partitions are not yet visible."""
    try:
        meta = admin.list_topics(topic, timeout=10).topics.get(topic)
    except KafkaException:  # a killed broker can time out a metadata request: just ask again
        return None
    return meta.partitions.get(0) if meta is not None and meta.error is None else None


def isr(admin: AdminClient, topic: str) -> list[int]:
    part = partition0(admin, topic)
    return sorted(part.isrs) if part is not None else []


def leader(admin: AdminClient, topic: str) -> int:
    part = partition0(admin, topic)
    assert part is not None, f"{topic} partition 0 has no metadata"
    return int(part.leader)


def produce(bootstrap: str, topic: str, values: list[bytes]) -> list[Message]:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    acked: list[Message] = []
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        (errors.append(err) if err is not None else acked.append(msg))

    for value in values:
        producer.produce(topic, value=value, on_delivery=on_delivery)
    assert producer.flush(60) == 0
    assert errors == []
    return acked


def test_cluster_metadata(cluster: LocalStack) -> None:
    state = cluster.state()
    admin = AdminClient({"bootstrap.servers": state.bootstrap_servers})
    assert sorted(admin.list_topics(timeout=10).brokers) == [1, 2, 3]
    assert len(state.bootstrap_servers.split(",")) == 3


def test_acks_all_survives_a_killed_broker_which_rejoins_the_isr(cluster: LocalStack, tmp_path: Path) -> None:
    state = cluster.state()
    bootstrap = state.bootstrap_servers
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = "rf3-min-isr2"
    admin.create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=3, config={"min.insync.replicas": "2"})]
    )[topic].result(timeout=30)
    wait_until(lambda: isr(admin, topic) == [1, 2, 3], timeout=60, what="full ISR")

    before = produce(bootstrap, topic, [f"before-{i}".encode() for i in range(100)])

    victim = leader(admin, topic)  # kill the partition leader: the hardest single failure
    cluster.stop_node(victim, sig=signal.SIGKILL)
    survivors = sorted({1, 2, 3} - {victim})
    wait_until(lambda: isr(admin, topic) == survivors, timeout=60, what=f"ISR shrunk to {survivors}")

    during = produce(bootstrap, topic, [f"during-{i}".encode() for i in range(100)])
    assert len(during) == 100
    assert leader(admin, topic) in survivors

    cluster.start_node(victim)
    wait_until(lambda: isr(admin, topic) == [1, 2, 3], timeout=90, what=f"node {victim} back in ISR")

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "rf3-check", "enable.auto.commit": False}
    )
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


def test_gateway_answers_503_while_min_isr_is_not_met_and_writes_nothing(
    cluster: LocalStack, endpoints: Endpoints, tmp_path: Path
) -> None:
    """RF 2 with min ISR 2 and one replica down: acks=all cannot be met, so no 2xx and no record."""
    from tests.integration.test_gateway import orders  # noqa: PLC0415

    bootstrap = cluster.state().bootstrap_servers
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = "gw-min-isr2"
    admin.create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=2, config={"min.insync.replicas": "2"})]
    )[topic].result(timeout=30)
    wait_until(lambda: len(isr(admin, topic)) == 2, timeout=60, what="full ISR")
    writer = token("writer")
    # the session's registry holds the schemas
    gw = orders_gateway(bootstrap, endpoints.registry_url, topic, writer, tmp_path / "gateway.log")
    bodies = orders(3, seed=51)
    victim = next(n for n in isr(admin, topic) if n != leader(admin, topic))
    try:
        assert gw.post("OrderPlaced", writer, bodies[0]).status_code == 201
        cluster.stop_node(victim)
        wait_until(lambda: len(isr(admin, topic)) == 1, timeout=60, what=f"ISR without node {victim}")
        refused = gw.post("OrderPlaced", writer, bodies[1])
        assert refused.status_code == 503, refused.text
        # librdkafka retries NOT_ENOUGH_REPLICAS until the delivery timeout, then reports a timeout
        assert "written:" in refused.json()["detail"]
        assert end_offsets(bootstrap, topic) == [1]
        cluster.start_node(victim)
        wait_until(lambda: len(isr(admin, topic)) == 2, timeout=90, what=f"node {victim} back in ISR")
        assert gw.post("OrderPlaced", writer, bodies[2]).status_code == 201
    finally:
        gw.stop()
    assert end_offsets(bootstrap, topic) == [2]
