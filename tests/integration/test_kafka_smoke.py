"""The real broker: 1,000 records produced and consumed back, in order per partition."""

from __future__ import annotations

from collections import defaultdict

from confluent_kafka import Consumer, KafkaError, Message, Producer

from tests.conftest import Endpoints
from tests.helpers import wait_until


def test_produce_consume_1000_in_order_per_partition(endpoints: Endpoints, topic: str) -> None:
    producer = Producer(
        {"bootstrap.servers": endpoints.bootstrap_servers, "enable.idempotence": True, "acks": "all"}
    )
    acked: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
        else:
            acked[msg.partition() or 0].append((msg.offset() or 0, msg.value() or b""))

    sent: dict[bytes, list[bytes]] = defaultdict(list)
    for i in range(1000):
        key, value = f"key-{i % 17}".encode(), f"value-{i:04d}".encode()
        sent[key].append(value)
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert errors == []
    assert sum(len(v) for v in acked.values()) == 1000

    consumer = Consumer(
        {
            "bootstrap.servers": endpoints.bootstrap_servers,
            "group.id": f"smoke-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received: list[Message] = []

    def drain() -> bool:
        for msg in consumer.consume(num_messages=500, timeout=0.5):
            assert msg.error() is None, msg.error()
            received.append(msg)
        return len(received) >= 1000

    try:
        wait_until(drain, timeout=60, what="1000 records consumed")
    finally:
        consumer.close()

    assert len(received) == 1000
    by_partition: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    by_key: dict[bytes, list[bytes]] = defaultdict(list)
    for msg in received:
        by_partition[msg.partition() or 0].append((msg.offset() or 0, msg.value() or b""))
        by_key[msg.key() or b""].append(msg.value() or b"")
    # Every partition reads back exactly what was acknowledged there, at the acknowledged offsets.
    assert {p: rows for p, rows in by_partition.items()} == {p: rows for p, rows in acked.items()}
    for rows in by_partition.values():
        offsets = [offset for offset, _ in rows]
        assert offsets == sorted(offsets)
    # And every key's values arrive in the order they were sent.
    assert by_key == sent
    assert len(by_partition) == 3  # 17 keys spread over all 3 partitions
