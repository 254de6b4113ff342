"""Batch handlers against the real broker: one call per fetched batch, offsets committed after it,
a failing record dead-lettered alone."""

from __future__ import annotations

import uuid

from evstream.consumers import Handlers, MessageContext
from evstream.schemas import Envelope
from evstream.schemas.events import Event
from tests.conftest import Endpoints, TopicFactory
from tests.consumer_helpers import ALL, publish, runner
from tests.factories import mixed_events
from tests.kafka_helpers import committed_offsets, end_offsets, read_records


def test_batches_commit_after_the_call_and_a_poison_record_fails_alone(
    endpoints: Endpoints, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=3)
    dlq = f"{topic}.dlq"
    events = mixed_events(400, seed=17)
    ids = publish(endpoints, topic, events)
    poison = {ids[50], ids[321]}
    sizes: list[int] = []
    handled: list[uuid.UUID] = []
    handlers = Handlers()

    @handlers.on_batch(*ALL)
    def handle(batch: list[Event], contexts: list[MessageContext]) -> None:
        sizes.append(len(batch))
        got = [c.envelope.event_id for c in contexts]
        if poison & set(got):
            raise ValueError("poison in this batch")
        handled.extend(got)

    group = f"g-{uuid.uuid4().hex[:8]}"
    stats = runner(endpoints, group, handlers, topic, settings={"batch_size": 500}).run(until_idle_s=3)

    assert sorted(handled) == sorted(set(ids) - poison)
    assert stats.handled == 398
    assert stats.dead_lettered == 2
    assert stats.batches_split >= 1
    assert max(sizes) > 1  # batches, not one call per record
    dead = read_records(endpoints.bootstrap_servers, [dlq], 2)
    assert {Envelope.from_headers(m.headers()).event_id for m in dead} == poison
    assert committed_offsets(endpoints.bootstrap_servers, group, topic, 3) == end_offsets(
        endpoints.bootstrap_servers, topic
    )
    again = runner(endpoints, group, handlers, topic).run(until_idle_s=2)
    assert again.consumed == 0
