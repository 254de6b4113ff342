"""Read the demo app's state from its changelog topics: the source of truth workers recover from.

Works from any process (no worker needed): the last record per key of each changelog is the
table's current value. Used by ``make demo`` to print live aggregates and by the tests to check
the aggregates against the input.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from evstream.errors import EvstreamError
from evstream.settings import KafkaSettings, librdkafka_config

__all__ = ["Aggregates", "changelog_sizes", "read_aggregates", "read_changelog"]


def read_changelog(kafka: KafkaSettings, topic: str, timeout: float = 60.0) -> dict[bytes, bytes | None]:
    """The last value of every key of ``topic`` up to its current end (None: deleted)."""
    conf = librdkafka_config(kafka)
    consumer = Consumer(
        {
            **conf,
            "group.id": f"evstream-view-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",  # exactly_once apps: only committed state
            "enable.partition.eof": True,
        }
    )
    latest: dict[bytes, bytes | None] = {}
    try:
        found = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if found is None or found.error is not None:
            return latest
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in found.partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p, end in ends.items() if end > 0])
        remaining = {p for p, end in ends.items() if end > 0}
        idle = 0
        while remaining and idle < timeout * 2:
            batch = consumer.consume(1000, 0.5)
            idle = 0 if batch else idle + 1
            for msg in batch:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise EvstreamError(f"reading {topic}: {err.str()}")
                    remaining.discard(msg.partition() or 0)  # the end (a commit marker may follow)
                    continue
                key = msg.key()
                latest[key if isinstance(key, bytes) else (key or "").encode()] = msg.value()
            for tp in consumer.position([TopicPartition(topic, p) for p in remaining]):
                if tp.offset >= ends[tp.partition]:
                    remaining.discard(tp.partition)
        if remaining:  # never hand out a partial table as if it were the whole one
            raise EvstreamError(
                f"{topic}: partitions {sorted(remaining)} not read to their end in {timeout:g} s"
            )
    finally:
        consumer.close()
    return latest


@dataclass
class Aggregates:
    """The demo app's tables, merged across partitions."""

    totals: dict[str, dict[str, int]] = field(default_factory=dict)  # customer -> currency -> minor
    orders: dict[str, int] = field(default_factory=dict)  # customer -> orders counted
    tiers: dict[str, str] = field(default_factory=dict)  # customer -> tier
    revenue: dict[tuple[float, str], int] = field(default_factory=dict)  # (window start, currency) -> minor

    def revenue_by_window(self) -> dict[float, dict[str, int]]:
        out: dict[float, dict[str, int]] = {}
        for (start, currency), amount in sorted(self.revenue.items()):
            out.setdefault(start, {})[currency] = amount
        return out


def read_aggregates(kafka: KafkaSettings, app_id: str) -> Aggregates:
    """Customer totals, tiers and windowed revenue as the app's changelogs hold them now.

    Stored values are rows ``{"value": <model>, "applied": {origin: offset}, ...}``
    (:mod:`evstream.streams.state.records`);
    revenue keys are ``<currency>#p<partition>@<window start ms>``, summed over partitions.
    """
    found = Aggregates()
    for key, value in read_changelog(kafka, f"{app_id}-customer-totals-changelog").items():
        if value is None:
            continue
        customer, state = json.loads(key), json.loads(value)["value"]
        found.totals[customer] = dict(state.get("total_minor", {}))
        found.orders[customer] = int(state.get("orders", 0))
        found.tiers[customer] = state.get("tier") or ""
    for key, value in read_changelog(kafka, f"{app_id}-revenue-changelog").items():
        name = json.loads(key)
        if value is None or "@" not in name:  # deleted (expired), or a partition's stream time
            continue
        where, _, start_ms = name.rpartition("@")
        currency = where.split("#p")[0]
        slot = (int(start_ms) / 1000, currency)
        found.revenue[slot] = found.revenue.get(slot, 0) + int(json.loads(value)["value"].get("sum_minor", 0))
    return found


def changelog_sizes(kafka: KafkaSettings, topic: str) -> list[int]:
    """The byte size of the current value of every key of a changelog (for the flatness check)."""
    return [len(v) for v in read_changelog(kafka, topic).values() if v is not None]
