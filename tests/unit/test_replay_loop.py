"""BoundedReplay's loop against a scripted consumer (no Kafka): progress commits, the envelope a
handler sees, undecodable records, and the bounded read-ahead of its consumer."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pytest
from confluent_kafka import Message, TopicPartition

from evstream.consumers import Handlers, MessageContext
from evstream.consumers.replay import BoundedReplay, ReplayResult, bounded
from evstream.consumers.replay.bounded import consumer_config, release_free_memory
from evstream.errors import ReplayError
from evstream.schemas import AvroCodec, Envelope
from evstream.schemas.domain import PaymentCaptured
from evstream.schemas.events import Event
from evstream.testing import InMemorySchemaStore
from tests.factories import mixed_events

TOPIC = "payments"
PAYMENTS = [e for e in mixed_events(400, seed=5) if isinstance(e, PaymentCaptured)]


@dataclass
class Commit:
    asynchronous: bool
    offsets: dict[int, tuple[int, str | None]]  # partition -> (offset, metadata)


@dataclass
class ScriptedConsumer:
    """Hands out ``records`` in batches, tracks fetch positions, records pauses and commits."""

    records: list[Message]
    commits: list[Commit] = field(default_factory=list)
    paused: set[int] = field(default_factory=set)
    fetched: dict[int, int] = field(default_factory=dict)  # partition -> next offset handed out

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        batch = [m for m in self.records if m.partition() not in self.paused][:num_messages]
        for m in batch:
            self.records.remove(m)
            self.fetched[m.partition() or 0] = (m.offset() or 0) + 1
        return batch

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.fetched.get(tp.partition, 0)) for tp in partitions
        ]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused.update(tp.partition for tp in partitions)

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append(Commit(asynchronous, {tp.partition: (tp.offset, tp.metadata) for tp in offsets}))


def records(codec: AvroCodec, per_partition: int, partitions: int = 2) -> list[Message]:
    encode = codec.encoder(PaymentCaptured.subject(TOPIC), PaymentCaptured.avro_schema_dict(), strict=False)
    out = []
    for p in range(partitions):
        for offset in range(per_partition):
            event = PAYMENTS[(p * per_partition + offset) % len(PAYMENTS)]
            headers = Envelope(event_type="PaymentCaptured", correlation_id=f"c-{p}-{offset}").to_headers()
            out.append(
                Message(
                    topic=TOPIC,
                    partition=p,
                    offset=offset,
                    value=encode(event.model_dump()),
                    key=event.aggregate_id().encode(),
                    headers=[(k, v.encode() if isinstance(v, str) else v) for k, v in headers],
                )
            )
    return sorted(out, key=lambda m: (m.offset() or 0, m.partition() or 0))  # partitions interleaved


@dataclass
class Run:
    consumer: ScriptedConsumer
    result: ReplayResult


def replay_loop(
    handlers: Handlers, per_partition: int, run: list[Run] | None = None, *, trim_memory_s: float = 1.0
) -> Run:
    """BoundedReplay's loop over [0, per_partition) of two partitions, in batches of 10."""
    store = InMemorySchemaStore()
    codec = AvroCodec(store)
    replay = BoundedReplay(
        TOPIC, "earliest", handlers=handlers, schema_store=store, batch_size=10, trim_memory_s=trim_memory_s
    )
    ranges = {(TOPIC, p): (0, per_partition) for p in range(2)}
    done = Run(
        ScriptedConsumer(records(codec, per_partition)), ReplayResult(replay.name, ranges, resumed=False)
    )
    if run is not None:
        run.append(done)  # also when the loop raises
    consumer: Any = done.consumer
    replay._loop(consumer, None, codec, ranges, dict(ranges), done.result, None, None)
    return done


def test_progress_is_committed_after_each_batch_and_synchronously_at_the_end() -> None:
    seen: dict[int, list[int]] = defaultdict(list)
    handlers = Handlers()

    @handlers.on(PaymentCaptured)
    def handle(event: PaymentCaptured, ctx: MessageContext) -> None:
        seen[ctx.partition].append(ctx.offset)

    run = replay_loop(handlers, 25)
    consumer, result = run.consumer, run.result

    assert dict(seen) == {0: list(range(25)), 1: list(range(25))}
    assert (result.processed, result.delivered, result.skipped, result.undecodable) == (50, 50, 0, 0)
    assert result.per_partition == {(TOPIC, 0): 25, (TOPIC, 1): 25}
    *during, last = consumer.commits
    assert len(during) == 5  # one per batch of 10
    assert all(c.asynchronous for c in during)  # a batch does not wait for the coordinator
    assert not last.asynchronous  # the end of the loop does
    assert last.offsets == {0: (25, "evstream-replay:end=25"), 1: (25, "evstream-replay:end=25")}
    for p in (0, 1):  # each batch's commit moves its partitions forward, never back
        offsets = [c.offsets[p][0] for c in consumer.commits if p in c.offsets]
        assert offsets == sorted(offsets)
        assert all(c.offsets[p][1] == "evstream-replay:end=25" for c in consumer.commits if p in c.offsets)


def test_a_failing_handler_leaves_progress_committed_up_to_the_record_before_it() -> None:
    handled: list[tuple[int, int]] = []
    handlers = Handlers()

    @handlers.on(PaymentCaptured)
    def handle(event: PaymentCaptured, ctx: MessageContext) -> None:
        if (ctx.partition, ctx.offset) == (1, 17):
            raise RuntimeError("boom")
        handled.append((ctx.partition, ctx.offset))

    runs: list[Run] = []
    with pytest.raises(ReplayError, match=r"payments\[1\]@17: handler failed"):
        replay_loop(handlers, 25, runs)
    # records come partition-interleaved (0@0, 1@0, 0@1, ...): 0@0..0@17 and 1@0..1@16 were handled
    assert handled[-1] == (0, 17)
    assert len(handled) == 18 + 17
    last = runs[0].consumer.commits[-1]
    assert not last.asynchronous  # however the loop ends, its last commit waits
    assert last.offsets == {0: (18, "evstream-replay:end=25"), 1: (17, "evstream-replay:end=25")}
    assert runs[0].result.delivered == 35


def test_the_handler_sees_the_envelope_from_the_headers_and_one_taking_the_event_alone_works() -> None:
    envelopes: list[Envelope] = []
    events: list[Event] = []
    with_context = Handlers()

    @with_context.on(PaymentCaptured)
    def handle(event: PaymentCaptured, ctx: MessageContext) -> None:
        envelopes.append(ctx.envelope)

    alone = Handlers()

    @alone.on(PaymentCaptured)
    def handle_alone(event: PaymentCaptured) -> None:
        events.append(event)

    replay_loop(with_context, 3)
    result = replay_loop(alone, 3).result

    assert [e.correlation_id for e in envelopes] == [f"c-{p}-{o}" for o in range(3) for p in range(2)]
    assert all(isinstance(e.event_id, UUID) and e.event_type == "PaymentCaptured" for e in envelopes)
    assert all(e.occurred_at.tzinfo is not None for e in envelopes)
    assert events == [PAYMENTS[p * 3 + o] for o in range(3) for p in range(2)]
    assert result.delivered == 6


def test_a_record_with_a_malformed_envelope_or_body_is_counted_and_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = InMemorySchemaStore()
    codec = AvroCodec(store)
    good = records(codec, 4)
    first: Any = good[0].headers()
    bad_id = [(k, b"not-a-uuid" if k == "ce_id" else v) for k, v in first]
    broken = [
        Message(topic=TOPIC, partition=0, offset=0, value=good[0].value(), headers=bad_id),
        Message(
            topic=TOPIC, partition=1, offset=0, value=b"\x00\x00\x00\x00\x01\xff", headers=good[1].headers()
        ),
    ]
    consumer = ScriptedConsumer(broken + good[2:])
    seen: list[tuple[int, int]] = []
    handlers = Handlers()

    @handlers.on(PaymentCaptured)
    def handle(event: PaymentCaptured, ctx: MessageContext) -> None:
        seen.append((ctx.partition, ctx.offset))

    replay = BoundedReplay(TOPIC, "earliest", handlers=handlers, schema_store=store)
    ranges = {(TOPIC, p): (0, 4) for p in range(2)}
    result = ReplayResult("r", ranges, False)
    scripted: Any = consumer
    replay._loop(scripted, None, codec, ranges, dict(ranges), result, None, None)
    assert (result.processed, result.delivered, result.undecodable) == (8, 6, 2)
    skipped = [r.getMessage() for r in caplog.records if "skipping undecodable" in r.getMessage()]
    assert len(skipped) == 2
    assert "record payments[0]@0: malformed envelope headers" in skipped[0]
    error = skipped[1].split("record payments[1]@0: ", 1)[1]
    assert "payments[1]@0" in error  # the decode error itself names the record too
    assert sorted(seen) == [(p, o) for p in range(2) for o in range(1, 4)]


def test_the_consumer_reads_ahead_a_bounded_amount() -> None:
    """librdkafka's default prefetch held 250-370 MB of records on 6 partitions of a slow replay."""
    conf: dict[str, Any] = consumer_config({"bootstrap.servers": "x"}, "evstream-replay.r")
    assert conf["queued.min.messages"] <= 2_000
    assert conf["queued.max.messages.kbytes"] <= 4_096
    assert conf["max.partition.fetch.bytes"] <= 262_144
    assert conf["fetch.max.bytes"] <= 2_097_152
    assert conf["fetch.queue.backoff.ms"] <= 10  # a full queue must not stall the replay for 1 s
    assert (conf["enable.auto.commit"], conf["enable.auto.offset.store"]) == (False, False)
    assert conf["group.id"] == "evstream-replay.r"


def test_free_memory_is_handed_back_between_batches_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []

    def trim() -> bool:
        trims.append(1)
        return True

    monkeypatch.setattr(bounded, "release_free_memory", trim)
    handlers = Handlers()
    handlers.on(PaymentCaptured)(lambda event: None)

    replay_loop(handlers, 25, trim_memory_s=1e-9)  # due after every batch: 5 batches of 10
    assert len(trims) == 5
    replay_loop(handlers, 25, trim_memory_s=0)  # never
    assert len(trims) == 5


def test_releasing_free_memory_is_safe_to_call() -> None:
    assert isinstance(release_free_memory(), bool)  # glibc: malloc_trim(0); elsewhere a no-op
    assert isinstance(release_free_memory(), bool)  # resolved once, callable again
