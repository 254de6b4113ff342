"""The dispatcher and failure routing, through evstream.testing.HandlerHarness (no Kafka)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from evstream import ConfigError, DeadLetter
from evstream.consumers import ConsumerSettings, Handlers, InMemoryDedupeStore, MessageContext
from evstream.schemas import Envelope
from evstream.schemas.domain import CustomerRegistered, OrderPlaced, PaymentCaptured
from evstream.schemas.events import Event
from evstream.testing import HandlerHarness, InMemorySchemaStore
from tests.factories import mixed_events

EVENTS = mixed_events(12, seed=3)
ORDER = next(e for e in EVENTS if isinstance(e, OrderPlaced))
PAYMENT = next(e for e in EVENTS if isinstance(e, PaymentCaptured))
CUSTOMER = next(e for e in EVENTS if isinstance(e, CustomerRegistered))


def orders(fn: Any, *, ordered: bool = False) -> Handlers:
    handlers = Handlers()
    handlers.on(OrderPlaced, PaymentCaptured, ordered=ordered)(fn)
    return handlers


def test_a_handled_event_and_its_context() -> None:
    seen: list[tuple[Event, MessageContext]] = []
    with HandlerHarness(orders(lambda event, ctx: seen.append((event, ctx)))) as h:
        envelope = Envelope(event_type="OrderPlaced", correlation_id="c-1")
        outcome = h.send(ORDER, envelope=envelope, partition=2)
        second = h.send(PAYMENT, partition=2)
    assert (outcome.kind, outcome.event, outcome.retries, outcome.routed) == ("handled", ORDER, 0, None)
    assert second.kind == "handled"
    assert h.handled == [ORDER, PAYMENT]
    event, ctx = seen[0]
    assert event == ORDER
    assert (ctx.topic, ctx.partition, ctx.offset, ctx.attempt, ctx.retry_tier) == ("orders", 2, 0, 1, 0)
    assert ctx.envelope.event_id == envelope.event_id
    assert ctx.envelope.correlation_id == "c-1"
    assert ctx.key == ORDER.aggregate_id().encode()
    assert seen[1][1].offset == 1  # offsets count per partition
    assert (h.stats.consumed, h.stats.handled) == (2, 2)


def test_handlers_may_take_the_event_alone_and_may_be_async() -> None:
    calls: list[str] = []
    handlers = Handlers()

    @handlers.on(OrderPlaced)
    def event_only(event: OrderPlaced) -> None:
        calls.append(f"sync {event.order_id}")

    @handlers.on(PaymentCaptured)
    async def async_with_context(event: PaymentCaptured, ctx: MessageContext) -> None:
        await asyncio.sleep(0)
        calls.append(f"async {event.payment_id} attempt {ctx.attempt}")

    @handlers.on(CustomerRegistered)
    async def async_event_only(event: CustomerRegistered) -> None:
        calls.append(f"async {event.customer_id}")

    with HandlerHarness(handlers, topics=["orders", "customers"]) as h:
        for event in (ORDER, PAYMENT, CUSTOMER):
            assert h.send(event).kind == "handled"
    assert calls == [
        f"sync {ORDER.order_id}",
        f"async {PAYMENT.payment_id} attempt 1",
        f"async {CUSTOMER.customer_id}",
    ]
    assert handlers.lookup("OrderPlaced") is not None
    assert handlers.lookup("OrderPlaced").function is event_only  # type: ignore[union-attr]


def test_handler_shapes_are_checked_at_registration() -> None:
    handlers = Handlers()
    with pytest.raises(ConfigError, match="must take \\(event\\) or \\(event, ctx\\), not no arguments"):
        handlers.on(OrderPlaced)(lambda: None)
    with pytest.raises(ConfigError, match="not 3 arguments"):
        handlers.on(OrderPlaced)(lambda event, ctx, extra: None)
    with pytest.raises(ConfigError, match="required keyword-only parameter"):

        @handlers.on(OrderPlaced)
        def keyword(event: Event, *, db: object) -> None: ...

    with pytest.raises(ConfigError, match="needs at least one event model"):
        handlers.on()
    assert handlers.event_types == []  # nothing half-registered
    seen: list[object] = []
    handlers.on(OrderPlaced)(lambda event, ctx=None, *, extra=1: seen.append(ctx))  # defaults are fine
    handlers.on(PaymentCaptured)(lambda *args: seen.append(len(args)))
    with HandlerHarness(handlers) as h:
        h.send(ORDER)
        h.send(PAYMENT)
    assert isinstance(seen[0], MessageContext)
    assert seen[1] == 2


def test_transient_failures_are_retried_in_place_without_waiting() -> None:
    attempts: list[int] = []

    def flaky(event: Event, ctx: MessageContext) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("database blinked")

    # The runner's settings, one-second backoffs included: the harness skips the waits.
    settings = ConsumerSettings(retry_attempts=3, retry_wait_initial_s=1.0, retry_wait_max_s=5.0)
    started = time.perf_counter()
    with HandlerHarness(orders(flaky), settings=settings) as h:
        outcome = h.send(ORDER)
    assert time.perf_counter() - started < 0.5
    assert (outcome.kind, outcome.retries) == ("handled", 2)
    assert attempts == [1, 2, 3]
    assert h.dead_letters == []
    assert h.stats.retried == 2


def test_permanent_failures_are_dead_lettered_with_where_and_why() -> None:
    def broken(event: Event) -> None:
        raise ValueError(f"cannot handle {event.aggregate_id()}")

    with HandlerHarness(orders(broken), settings=ConsumerSettings(retry_attempts=3)) as h:
        h.send(PAYMENT, partition=1)  # offset 0 on partition 1: this one is at offset 1
        envelope = Envelope(event_type="OrderPlaced")
        outcome = h.send(ORDER, envelope=envelope, partition=1, headers=[("tenant", "acme")])
    assert outcome.kind == "dead_lettered"
    assert outcome.retries == 2
    dead = outcome.routed
    assert dead is not None
    assert dead is h.dead_letters[1]
    assert dead.is_dead_letter
    assert dead.topic == "orders.dlq"
    assert (dead.reason, dead.error_type, dead.attempts) == ("handler", "ValueError", 3)
    assert dead.error_message == f"cannot handle {ORDER.aggregate_id()}"
    assert dead.source == ("orders", 1, 1)
    assert dead.key == outcome.record.key()
    assert dead.value == outcome.record.value()  # the original bytes
    assert dead.envelope is not None
    assert dead.envelope.event_id == envelope.event_id  # the original headers are kept
    assert dead.header("tenant") == "acme"
    assert int(dead.header("evstream.dlq.timestamp") or 0) > 0
    assert dead.header("evstream.dlq.first-failure-at")
    assert h.handled == []


def test_a_dead_letter_signal_skips_the_retries() -> None:
    calls: list[int] = []

    def refuse(event: Event, ctx: MessageContext) -> None:
        calls.append(ctx.attempt)
        raise DeadLetter("refused by business rule")

    with HandlerHarness(orders(refuse)) as h:
        outcome = h.send(ORDER)
    assert calls == [1]
    assert outcome.kind == "dead_lettered"
    assert outcome.routed is not None
    assert (outcome.routed.error_type, outcome.routed.attempts) == ("DeadLetter", 1)
    assert outcome.routed.error_message == "refused by business rule"


def test_undecodable_records_go_straight_to_the_dead_letter_topic() -> None:
    calls: list[Event] = []
    no_grace = ConsumerSettings(unknown_schema_grace_s=0)  # an unknown id is held first otherwise
    with HandlerHarness(orders(calls.append), settings=no_grace) as h:
        garbage = h.send_raw(b"not avro at all", event_type="OrderPlaced", key="k1")
        no_envelope = h.send_raw(b"\x00\x00\x00\x00\x07garbage", key="k2")
        wrong_schema = h.send_raw(h.encode(PAYMENT), event_type="OrderPlaced", key="k3")
    assert calls == []
    assert [o.kind for o in (garbage, no_envelope, wrong_schema)] == ["dead_lettered"] * 3
    first, second, third = h.dead_letters
    assert (first.reason, first.error_type, first.attempts) == ("undecodable", "UnknownMagicByteError", 0)
    assert first.value == b"not avro at all"
    assert first.key == b"k1"
    assert second.reason == "unknown_schema_id"
    assert second.envelope is None
    # a sound body of another schema than the envelope's type: the schemas do not resolve
    assert (third.reason, third.error_type) == ("schema_mismatch", "SchemaMismatchError")
    assert h.stats.retried == 0


def test_an_unknown_schema_id_is_held_for_the_grace_period_not_dead_lettered() -> None:
    """An id the registry does not know *yet* is no proof of garbage (issue 14, defect 2)."""
    with HandlerHarness(orders(lambda _: None)) as h:
        held = h.send_raw(b"\x00\x00\x00\x00\x07garbage", key="k2")
    assert held.kind == "waiting"
    assert h.dead_letters == []
    assert h.stats.schema_held == 1


def test_dedupe_by_event_id() -> None:
    calls: list[Event] = []
    envelope = Envelope(event_type="OrderPlaced")
    with HandlerHarness(orders(calls.append), dedupe=InMemoryDedupeStore()) as h:
        kinds = [h.send(ORDER, envelope=envelope).kind for _ in range(3)]
        other = h.send(ORDER)  # the same event under a new id is new
    assert kinds == ["handled", "duplicate", "duplicate"]
    assert other.kind == "handled"
    assert len(calls) == 2
    assert (h.stats.handled, h.stats.duplicates) == (2, 2)


def test_a_failed_event_is_not_remembered_as_handled() -> None:
    fail = [True]

    def sometimes(event: Event) -> None:
        if fail[0]:
            raise DeadLetter("not now")

    envelope = Envelope(event_type="OrderPlaced")
    with HandlerHarness(orders(sometimes), dedupe=InMemoryDedupeStore()) as h:
        assert h.send(ORDER, envelope=envelope).kind == "dead_lettered"
        fail[0] = False
        assert h.send(ORDER, envelope=envelope).kind == "handled"  # e.g. redriven from the DLQ


def test_retry_tiers_then_the_dead_letter_topic_keep_the_source_coordinates() -> None:
    tiers: list[tuple[int, int, tuple[str, int, int]]] = []

    def timing_out(event: Event, ctx: MessageContext) -> None:
        tiers.append((ctx.retry_tier, ctx.attempt, ctx.source))
        raise TimeoutError("payment service timed out")

    settings = ConsumerSettings(retry_attempts=2, retry_topic_delays_s=(1.0, 60.0))
    with HandlerHarness(orders(timing_out), group_id="billing", settings=settings) as h:
        h.send(PAYMENT, partition=1)
        outcome = h.send(ORDER, partition=1)
        assert outcome.kind == "retry_topic"
        first = outcome.routed
        assert first is not None
        assert first.topic == "orders.billing.retry.1s"
        assert (first.tier, first.attempts, first.error_type) == (1, 2, "TimeoutError")
        assert first.source == ("orders", 1, 1)
        due = int(first.header("evstream.retry.due-at-ms") or 0)
        assert 0 < due / 1000 - time.time() <= 1.0
        assert h.pending == 2
        later = h.deliver_pending()
    assert [o.kind for o in later] == ["retry_topic", "retry_topic", "dead_lettered", "dead_lettered"]
    tier1, tier2 = "orders.billing.retry.1s", "orders.billing.retry.1m"
    assert [r.topic for r in h.retry_records] == [tier1, tier1, tier2, tier2]
    dead = h.dead_letters[1]
    assert dead.topic == "orders.dlq"  # of the source, not of a retry topic
    assert (dead.source, dead.attempts, dead.error_type) == (("orders", 1, 1), 6, "TimeoutError")
    assert not any(name.startswith("evstream.retry.") for name, _ in dead.headers)
    mine = [t for t in tiers if t[2] == ("orders", 1, 1)]
    assert mine == [(0, 1, s := ("orders", 1, 1)), (0, 2, s), (1, 3, s), (1, 4, s), (2, 5, s), (2, 6, s)]
    assert h.pending == 0


def test_a_retry_tier_can_succeed() -> None:
    def second_time_lucky(event: Event, ctx: MessageContext) -> None:
        if ctx.retry_tier == 0:
            raise ConnectionError("down")

    settings = ConsumerSettings(retry_attempts=1, retry_topic_delays_s=(5.0,))
    with HandlerHarness(orders(second_time_lucky), settings=settings) as h:
        assert h.send(ORDER).kind == "retry_topic"
        assert h.handled == []
        (done,) = h.deliver_pending()
    assert done.kind == "handled"
    assert done.record.topic() == "orders.harness.retry.5s"
    assert h.handled == [ORDER]


def test_ordered_handlers_block_their_partition_and_keep_order() -> None:
    handled: list[tuple[int, str]] = []
    poisoned = ORDER.aggregate_id()

    def strict(event: Event, ctx: MessageContext) -> None:
        if event.aggregate_id() == poisoned:
            raise ConnectionError("ledger unavailable")
        handled.append((ctx.partition, event.aggregate_id()))

    settings = ConsumerSettings(retry_attempts=2, ordered_max_attempts=6, retry_topic_delays_s=(1.0,))
    with HandlerHarness(orders(strict, ordered=True), settings=settings) as h:
        assert h.send(ORDER, partition=0).kind == "blocked"
        assert h.send(PAYMENT, partition=0).kind == "queued"  # behind the blocked record
        assert h.send(PAYMENT, partition=1).kind == "handled"  # other partitions keep flowing
        assert h.pending == 2
        later = h.deliver_pending()
    assert [o.kind for o in later] == ["blocked", "dead_lettered", "handled"]
    assert h.retry_records == []  # block-and-retry never uses retry topics
    (dead,) = h.dead_letters
    assert (dead.attempts, dead.source) == (6, ("orders", 0, 0))
    assert handled == [(1, PAYMENT.aggregate_id()), (0, PAYMENT.aggregate_id())]
    assert h.stats.blocked == 2


def test_ordered_handler_that_never_succeeds_is_reported() -> None:
    def never(event: Event) -> None:
        raise ConnectionError("down")

    settings = ConsumerSettings(retry_attempts=1, ordered_max_attempts=0)  # 0: block until it succeeds
    with HandlerHarness(orders(never, ordered=True), settings=settings) as h:
        h.send(ORDER)
        with pytest.raises(Exception, match="1 record\\(s\\) still pending after 5 rounds"):
            h.deliver_pending(max_rounds=5)


@pytest.mark.parametrize(("policy", "kind"), [("skip", "skipped"), ("dead_letter", "dead_lettered")])
def test_unknown_event_types_follow_the_policy(policy: Any, kind: str) -> None:
    settings = ConsumerSettings(unknown_event_policy=policy)
    with HandlerHarness(orders(lambda e: None), settings=settings) as h:
        outcome = h.send(CUSTOMER, topic="orders")
    assert outcome.kind == kind
    if kind == "dead_lettered":
        assert outcome.routed is not None
        assert outcome.routed.reason == "unknown_type"
        assert "no handler for event type 'CustomerRegistered'" in outcome.routed.error_message


def test_the_harness_must_be_started_and_told_the_topic() -> None:
    handlers = Handlers()
    handlers.on(OrderPlaced)(lambda e: None)
    handlers.on(CustomerRegistered)(lambda e: None)
    harness = HandlerHarness(handlers)
    with pytest.raises(Exception, match="not started"):
        harness.send(ORDER)
    with harness, pytest.raises(ConfigError, match="say which topic"):
        harness.send_raw(b"x")


def test_keys_that_only_look_framed_cost_one_registry_lookup() -> None:
    """A Java LongSerializer key (8 bytes, 0x00 first) reads as "schema id 0": that id is asked for
    once and then remembered as unknown, not looked up again for every record."""
    asked: list[int] = []

    class CountingStore(InMemorySchemaStore):
        def schema(self, schema_id: int) -> str | None:
            asked.append(schema_id)
            return super().schema(schema_id)

    keys: list[object] = []
    with HandlerHarness(
        orders(lambda event, ctx: keys.append(ctx.decoded_key)), schema_store=CountingStore()
    ) as h:
        for k in range(100):
            assert h.send(ORDER, key=k.to_bytes(8, "big")).kind == "handled"
    assert keys == [None] * 100  # the keys stay undecoded; ctx.key keeps the raw bytes
    assert asked.count(0) == 1, asked


def test_a_foreign_record_whose_schema_does_not_resolve_is_a_schema_mismatch() -> None:
    """A sound payload of a foreign writer schema that lacks a field the model needs (no default)
    is dead-lettered as ``schema_mismatch``, not as a corrupt ``undecodable`` body."""
    import json  # noqa: PLC0415

    from evstream.schemas import AvroCodec  # noqa: PLC0415

    store = InMemorySchemaStore()
    foreign = json.loads(json.dumps(OrderPlaced.avro_schema_dict()))
    foreign["fields"] = [f for f in foreign["fields"] if f["name"] != "customer_id"]
    foreign["namespace"] = "com.acme.orders"  # found by its short name, OrderPlaced
    record = ORDER.model_dump()
    del record["customer_id"]
    payload = AvroCodec(store).encode("orders-value", foreign, record)
    with HandlerHarness(orders(lambda event: None), schema_store=store) as h:
        outcome = h.send_raw(payload, topic="orders")
    assert outcome.kind == "dead_lettered"
    assert outcome.routed is not None
    assert outcome.routed.reason == "schema_mismatch"
    assert outcome.routed.error_type == "SchemaMismatchError"
    assert "customer_id" in outcome.routed.error_message
