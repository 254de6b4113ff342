"""Batch handlers (``@handlers.on_batch``) through the dispatcher: one call per batch, failures
isolated to the records that fail on their own, offsets held back for records not run."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from confluent_kafka import Message

from evstream import ConfigError, DeadLetter
from evstream.consumers import ConsumerSettings, Handlers, InMemoryDedupeStore, MessageContext
from evstream.consumers.dispatch import Dispatcher
from evstream.schemas.domain import OrderPlaced, PaymentCaptured
from evstream.schemas.events import Event, envelope_headers
from evstream.schemas.ids import new_event_id
from evstream.testing import HandlerHarness
from tests.factories import mixed_events

EVENTS: list[Event] = [
    e for e in mixed_events(60, seed=5) if e.event_type() in ("OrderPlaced", "PaymentCaptured")
][:12]


def records(h: HandlerHarness, events: list[Event], partition: int = 0) -> list[Message]:
    out = []
    for offset, event in enumerate(events):
        headers = envelope_headers(new_event_id(), event.event_type(), None, "test", None, None, None)
        out.append(
            Message(
                topic=type(event).topic,
                partition=partition,
                offset=offset,
                key=event.aggregate_id().encode(),
                value=h.encode(event),
                headers=[(k, v.encode() if isinstance(v, str) else v) for k, v in headers],
                timestamp=(1, int(time.time() * 1000)),
            )
        )
    return out


def dispatcher(h: HandlerHarness, handlers: Handlers, **settings: Any) -> Dispatcher:
    """A dispatcher over ``handlers`` sharing the harness's codec, loop and failure writer."""
    base, codec = h._require()
    config = h.settings.model_copy(update=settings)
    return Dispatcher(h.group_id, handlers, config, codec, base.router, h.dedupe, h.stats, base.loop)


def test_one_call_per_batch_and_nothing_runs_before_the_flush() -> None:
    calls: list[list[Event]] = []
    handlers = Handlers()
    handlers.on_batch(OrderPlaced, PaymentCaptured)(calls.append)
    with HandlerHarness(handlers) as h:
        d = dispatcher(h, handlers)
        for msg in records(h, EVENTS):
            assert d.process(msg) is None
        assert calls == []  # collected, not run
        d.flush_batches()
        assert d.unfinished() == {}
    assert calls == [EVENTS]  # both types in one call, in order
    assert (h.stats.consumed, h.stats.handled, h.stats.batches_split) == (12, 12, 0)


def test_records_not_run_are_reported_from_their_first_offset() -> None:
    handlers = Handlers()
    handlers.on_batch(OrderPlaced, PaymentCaptured)(lambda events: None)
    with HandlerHarness(handlers) as h:
        d = dispatcher(h, handlers)
        for msg in records(h, EVENTS[:3], partition=4):
            d.process(msg)
        topic = type(EVENTS[0]).topic
        assert d.unfinished() == {(topic, 4): 0}  # an error before the flush: store nothing past 0
        d.flush_batches()
        assert h.stats.handled == 0  # forgotten: redelivered after a restart


def test_a_failing_record_fails_alone_and_the_others_are_handled() -> None:
    bad = EVENTS[4]
    refused = EVENTS[7]
    calls: list[int] = []
    handled: list[Event] = []

    def handle(events: list[Event], contexts: list[MessageContext]) -> None:
        calls.append(len(events))
        assert [c.envelope.event_type for c in contexts] == [e.event_type() for e in events]
        if bad in events:
            raise ValueError("cannot handle this one")
        if refused in events:
            raise DeadLetter("refused by business rule")
        handled.extend(events)

    handlers = Handlers()
    handlers.on_batch(OrderPlaced, PaymentCaptured)(handle)
    with HandlerHarness(handlers, settings=ConsumerSettings(retry_attempts=2)) as h:
        d = dispatcher(h, handlers)
        for msg in records(h, EVENTS):
            d.process(msg)
        d.flush_batches()
    assert handled == [e for e in EVENTS if e not in (bad, refused)]
    # the batch, then each record alone; the bad one twice (in-place retry)
    assert calls == [12] + [1] * 11 + [1, 1]
    assert (h.stats.handled, h.stats.dead_lettered, h.stats.retried, h.stats.batches_split) == (10, 2, 1, 1)
    reasons = {(r.error_type, r.attempts) for r in h.dead_letters}
    assert reasons == {("ValueError", 2), ("DeadLetter", 1)}
    assert {r.source[2] for r in h.dead_letters} == {4, 7}


def test_async_batch_handlers_and_dedupe() -> None:
    seen: list[Event] = []
    handlers = Handlers()

    @handlers.on_batch(OrderPlaced, PaymentCaptured)
    async def handle(events: list[Event]) -> None:
        await asyncio.sleep(0)
        seen.extend(events)

    dedupe = InMemoryDedupeStore()
    with HandlerHarness(handlers, dedupe=dedupe) as h:
        d = dispatcher(h, handlers)
        batch = records(h, EVENTS[:5])
        for msg in batch:
            d.process(msg)
        d.flush_batches()
        for msg in batch:  # redelivered: all duplicates now
            d.process(msg)
        d.flush_batches()
    assert seen == EVENTS[:5]
    assert h.stats.duplicates == 5


def test_the_harness_delivers_to_batch_handlers_one_record_at_a_time() -> None:
    handlers = Handlers()
    batches: list[list[Event]] = []
    handlers.on_batch(OrderPlaced)(batches.append)
    with HandlerHarness(handlers) as h:
        outcome = h.send(next(e for e in EVENTS if isinstance(e, OrderPlaced)))
    assert outcome.kind == "handled"
    assert [len(b) for b in batches] == [1]
    assert h.handled == batches[0]


def test_batch_and_single_handlers_cannot_share_a_type() -> None:
    handlers = Handlers()
    handlers.on(OrderPlaced)(lambda e: None)
    with pytest.raises(ConfigError, match="already registered"):
        handlers.on_batch(OrderPlaced)(lambda events: None)
    with pytest.raises(ConfigError, match="at least one"):
        handlers.on_batch()
