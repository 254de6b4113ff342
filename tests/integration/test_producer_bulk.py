"""send() and publish_bulk() against the real broker: acked counts, records written, metrics."""

from __future__ import annotations

import uuid

from prometheus_client import REGISTRY

from evstream import KafkaSettings, RegistrySettings
from evstream.errors import PublishError
from evstream.producers import EventProducer
from tests.conftest import Endpoints, TopicFactory
from tests.factories import mixed_events
from tests.kafka_helpers import end_offsets


def acked_total(topic: str, types: set[str]) -> float:
    return sum(
        REGISTRY.get_sample_value(
            "evstream_events_published_total", {"topic": topic, "event_type": t, "outcome": "acked"}
        )
        or 0
        for t in types
    )


def test_bulk_and_fire_and_forget_are_acked_counted_and_written(
    endpoints: Endpoints, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=3)
    events = mixed_events(700, seed=9)
    errors: list[tuple[uuid.UUID, PublishError]] = []
    with EventProducer(
        kafka=KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers),
        registry=RegistrySettings(url=endpoints.registry_url),
        on_error=lambda event_id, error: errors.append((event_id, error)),
    ) as producer:
        bulk = producer.publish_bulk(events[:500], topic=topic)
        ids = [producer.send(event, topic=topic) for event in events[500:]]
        assert bulk.wait(30)
        assert producer.flush(30) == 0
    assert (bulk.acked, bulk.failed, bulk.indeterminate, bulk.pending) == (500, 0, 0, 0)
    assert (producer.sent.acked, producer.sent.pending, errors) == (200, 0, [])
    assert len(set(ids)) == 200
    assert sum(end_offsets(endpoints.bootstrap_servers, topic)) == 700
    assert acked_total(topic, {e.event_type() for e in events}) == 700  # metrics added per batch
