"""Reading back what tests wrote: end offsets, committed offsets, records (polling with deadlines)."""

from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from tests.helpers import wait_until


def _probe(bootstrap: str, **conf: Any) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:8]}", **conf})


# A fresh topic's partitions can be listed with a leader before that broker serves them yet.
_SETTLING = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}


def end_offsets(bootstrap: str, topic: str) -> list[int]:
    """The high watermark of every partition of ``topic``, by partition number.

    Leadership still settling (a topic created a moment ago) is retried for up to 30 s.
    """
    consumer = _probe(bootstrap)

    def read() -> list[int] | None:
        try:
            partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
            return [
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
            ]
        except KafkaException as exc:
            if exc.args[0].code() in _SETTLING:
                return None
            raise

    try:
        return wait_until(read, timeout=30, what=f"end offsets of {topic}")
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    """``group``'s committed offset per partition (-1001 where it has none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        wanted = [TopicPartition(topic, p) for p in range(partitions)]
        return [tp.offset for tp in consumer.committed(wanted, timeout=10)]
    finally:
        consumer.close()


def read_records(bootstrap: str, topics: list[str], count: int, **conf: Any) -> list[Message]:
    """Subscribe from the earliest offset and poll until ``count`` records arrived (60 s deadline)."""
    consumer = _probe(bootstrap, **{"auto.offset.reset": "earliest", "enable.auto.commit": False, **conf})
    consumer.subscribe(topics)
    got: list[Message] = []

    def drain() -> bool:
        got.extend(m for m in consumer.consume(1000, timeout=0.5) if m.error() is None)
        return len(got) >= count

    try:
        wait_until(drain, timeout=60, what=f"{count} records from {', '.join(topics)}")
    finally:
        consumer.close()
    return got


def record_at(bootstrap: str, topic: str, partition: int, offset: int) -> Message:
    """The record at ``topic``/``partition``/``offset`` (read-committed; 30 s deadline)."""
    consumer = _probe(bootstrap, **{"enable.auto.commit": False, "isolation.level": "read_committed"})
    consumer.assign([TopicPartition(topic, partition, offset)])
    found: list[Message] = []

    def read() -> bool:
        found.extend(m for m in consumer.consume(1, timeout=0.5) if m.error() is None)
        return bool(found)

    try:
        wait_until(read, timeout=30, what=f"{topic}[{partition}]@{offset}")
    finally:
        consumer.close()
    assert found[0].offset() == offset, f"no record at {offset}: the next is at {found[0].offset()}"
    return found[0]
