"""evstream.streams.App on the in-memory StreamHarness (no broker): offset-deduplicated updates of
constant size, the write-behind order, windows (tumbling, hopping, session: close, grace, late,
expiry), joins (lookups and waits), publishes, dead letters, re-keying and the co-partitioning
check, and the demo app through a crash and a replay."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel

from evstream.errors import ConfigError
from evstream.schemas import Envelope
from evstream.schemas.domain import (
    CATALOG,
    CustomerRegistered,
    CustomerTier,
    CustomerTierChanged,
    CustomerUpdated,
    OrderPlaced,
)
from evstream.settings import KafkaSettings, RegistrySettings
from evstream.streams import (
    App,
    CopartitioningError,
    Received,
    SessionTable,
    Table,
    Wait,
    Window,
    WindowedTable,
)
from evstream.streams.context import ORIGIN_HEADER, Record
from evstream.streams.demo import CustomerTotals, Person, Revenue, create_app, tier_for
from evstream.streams.joins import Waiting, WaitThen
from evstream.streams.state.tables import TableState
from evstream.testing import StreamHarness
from evstream.testing.streams import Written
from tests.factories import START, mixed_events

T0 = START

_EVENTS = mixed_events(12, seed=1)
BASE_ORDER = next(e for e in _EVENTS if isinstance(e, OrderPlaced))
BASE_CUSTOMER = next(e for e in _EVENTS if isinstance(e, CustomerRegistered))


class Count(BaseModel):
    n: int = 0


def plus(k: int) -> Callable[[Count], Count]:
    return lambda c: Count(n=c.n + k)


def new_app() -> App:
    return App(
        "unit-app",
        catalog=CATALOG,
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        registry=RegistrySettings(),
    )


def demo_app() -> App:
    return create_app(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"), registry=RegistrySettings())


def order(customer: str = "c-1", *, at: datetime = T0, order_id: str | None = None) -> OrderPlaced:
    update: dict[str, Any] = {"customer_id": customer, "placed_at": at}
    if order_id is not None:
        update["order_id"] = order_id
    return BASE_ORDER.model_copy(update=update)


def customer(customer_id: str) -> CustomerRegistered:
    return BASE_CUSTOMER.model_copy(update={"customer_id": customer_id})


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def when(stamp_ms: int) -> datetime:
    return datetime.fromtimestamp(stamp_ms / 1000, UTC)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def as_record(written: Written) -> Record:
    """A record the app wrote, read back (as Kafka would redeliver it after a crash)."""
    return Record(
        written.topic, written.partition, written.offset, written.key, written.value, written.headers, 0
    )


# -- tables: once per source offset, write-behind ------------------------------------------------------


def counting_app() -> tuple[App, Table[Count], list[Any]]:
    """orders re-keyed to one key ("k") and counted there: records of every orders partition
    reach one row, each with its origin."""
    app = new_app()
    orders = app.events_topic("orders")
    by_key = app.group_by(orders, OrderPlaced, key=lambda _o: "k", name="by-key")
    counts = app.table("counts", Count)
    changes: list[Any] = []

    @app.on(by_key, OrderPlaced, updates=[counts])
    async def count(_order: OrderPlaced, _received: Received) -> None:
        changes.append(counts.update("k", plus(1)))

    return app, counts, changes


def test_an_update_is_applied_once_per_source_offset_and_the_row_stays_small() -> None:
    app, counts, changes = counting_app()
    skipped = metric("evstream_stream_skipped_updates_total", table="counts")
    sizes = []
    with StreamHarness(app) as h:
        records = []
        for _ in range(1000):
            records.append(h.send(order(), partition=0))
            h.commit()
            sizes.append(len(h.rows(counts)["k"].to_bytes()))
        assert h.table(counts) == {"k": Count(n=1000)}
        assert [c.after.n for c in changes] == list(range(1, 1001))
        assert sizes[-1] - sizes[100] <= 2  # constant size: only the digits of n and the offset grow

        h.deliver([records[0], records[500], records[999]])  # replays after a crash: forwarded again...
        assert len(h.written["unit-app-by-key"]) == 1003
        assert changes[-3:] == [None, None, None]  # ...and skipped
        assert h.table(counts) == {"k": Count(n=1000)}
        assert metric("evstream_stream_skipped_updates_total", table="counts") - skipped == 3

        h.send(order(), partition=1)  # another source partition: its own offsets
        h.commit()
        assert h.table(counts) == {"k": Count(n=1001)}
        assert h.rows(counts)["k"].applied == {"orders:0": 999, "orders:1": 0}


def test_a_replayed_event_decides_once_for_every_update_of_a_key() -> None:
    app = new_app()
    orders = app.events_topic("orders")
    counts = app.table("counts", Count)
    changes: list[Any] = []

    @app.on(orders, OrderPlaced, updates=[counts])
    async def count_twice(_order: OrderPlaced, _received: Received) -> None:
        changes.append(counts.update("k", plus(1)))
        changes.append(counts.update("k", plus(10)))

    with StreamHarness(app) as h:
        record = h.send(order(), partition=0)
        assert [c.after.n for c in changes] == [1, 11]  # one event updating a key twice: both apply
        h.commit()
        h.deliver([record])  # processed again: both updates skipped, not just the first
        assert changes[2:] == [None, None]
        assert h.table(counts) == {"k": Count(n=11)}


def test_writes_reach_the_changelog_at_the_commit_and_reads_see_them_before() -> None:
    app = new_app()
    orders = app.events_topic("orders")
    counts = app.table("counts", Count)
    read: list[Count | None] = []

    @app.on(orders, OrderPlaced, updates=[counts])
    async def count(_order: OrderPlaced, _received: Received) -> None:
        read.append(counts.get("k"))
        counts.update("k", plus(1))

    changelog = "unit-app-counts-changelog"
    with StreamHarness(app) as h:
        h.send(order(), partition=0)
        assert h.changelogs.get(changelog, []) == []  # nothing in the changelog before the commit
        assert counts.get("k") == Count(n=1)  # read outside a handler: pending rows included
        h.send(order(), partition=0)
        assert read == [None, Count(n=1)]  # the next event reads the pending row
        h.commit()
        assert [(key, row and row.value) for key, row in h.changelogs[changelog]] == [("k", {"n": 2})]
        h.send(order(), partition=0)
        assert h.table(counts) == {"k": Count(n=3)}
        h.crash()  # killed before the commit: the pending row is gone, the committed one stays
        assert h.table(counts) == {"k": Count(n=2)}
        assert len(h.changelogs[changelog]) == 1


def test_an_update_outside_a_handler_is_refused() -> None:
    app = new_app()
    counts = app.table("counts", Count)
    with pytest.raises(ConfigError, match="inside a handler"):
        counts.update("k", plus(1))


def test_a_plain_def_handler_works_like_an_async_one() -> None:
    def run(*, plain: bool) -> tuple[dict[str, Count], dict[str, Count], list[Any], list[str]]:
        app = new_app()
        orders = app.events_topic("orders")
        tiers = app.events_topic("customer-tiers")
        counts = app.table("counts", Count)
        closed: list[tuple[str, Window, int]] = []

        async def on_close(key: str, window: Window, value: Count, _r: Received) -> None:
            closed.append((key, window, value.n))

        minutes = app.windowed_table("minutes", Count, size=timedelta(minutes=1), on_close=on_close)

        def effects(event: OrderPlaced, received: Received) -> Any:
            change = counts.update(event.customer_id, plus(1))
            assert change is not None
            tier = CustomerTierChanged(
                customer_id=event.customer_id,
                tier=tier_for(change.after.n),
                orders=change.after.n,
                changed_at=event.placed_at,
            )
            return app.publish(tier, cause=received, topic=tiers), minutes.update(
                "m", event.placed_at, plus(1)
            )

        if plain:

            @app.on(orders, OrderPlaced, updates=[counts, minutes])
            def handle(event: OrderPlaced, received: Received) -> None:
                effects(event, received)  # neither the publish nor the window update awaited

        else:

            @app.on(orders, OrderPlaced, updates=[counts, minutes])
            async def handle_async(event: OrderPlaced, received: Received) -> None:
                published, sent = effects(event, received)
                await published
                await sent

        with StreamHarness(app) as h:
            for second in (0, 30, 70, 130):
                h.send(order("c-1", at=at(second)), partition=0)
            published = [w.header("ce_type") or "" for w in h.written["customer-tiers"]]
            return h.table(counts), h.table(minutes), closed, published

    plain, coroutine = run(plain=True), run(plain=False)
    assert plain == coroutine
    counts, minutes, closed, published = plain
    assert counts == {"c-1": Count(n=4)}
    assert minutes == {f"m@{ms(at(60))}": Count(n=1), f"m@{ms(at(120))}": Count(n=1)}  # [0, 60) expired
    assert closed == [  # the async on_close ran after the plain handler too
        ("m", Window(T0, T0 + timedelta(minutes=1)), 2),
        ("m", Window(T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)), 1),
    ]
    assert published == ["CustomerTierChanged"] * 4


# -- windows ---------------------------------------------------------------------------------------


def windowed_app(
    **options: Any,
) -> tuple[App, WindowedTable[Count], list[tuple[str, Window, int]], list[list[Any]]]:
    """A windowed count per event time of orders (key "k"), on_close recorded, late events
    forwarded to ``late-orders``."""
    app = new_app()
    orders = app.events_topic("orders")
    late = app.events_topic("late-orders")
    closed: list[tuple[str, Window, int]] = []
    changes: list[list[Any]] = []

    def on_close(key: str, window: Window, value: Count, _r: Received) -> None:
        closed.append((key, window, value.n))

    table = app.windowed_table("w", Count, on_close=on_close, late_topic=late, **options)

    @app.on(orders, OrderPlaced, updates=[table])
    async def count(event: OrderPlaced, _received: Received) -> None:
        changes.append(await table.update("k", event.placed_at, plus(1)))

    return app, table, closed, changes


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_tumbling_windows_close_after_the_grace_once_and_late_events_are_counted() -> None:
    app, table, closed, changes = windowed_app(
        size=timedelta(minutes=1), grace=timedelta(seconds=10), expires=timedelta(minutes=10)
    )
    late = metric("evstream_stream_late_events_total", table="w")
    with StreamHarness(app) as h:
        for second in [0, 20, 59, 65, 69]:
            h.send(order(at=at(second)), partition=0)
        assert closed == []  # stream time 69 < end 60 + grace 10
        h.send(order(at=at(75)), partition=0)
        assert closed == [("k", Window(T0, at(60)), 3)]
        late_record = h.send(order(at=at(30)), partition=0)  # its window closed at 70
        assert changes[-1] == []
        assert metric("evstream_stream_late_events_total", table="w") - late == 1
        [forwarded] = h.written["late-orders"]
        assert forwarded.value == late_record.value()
        assert forwarded.header(ORIGIN_HEADER) == "orders:0:6"
        assert [e.placed_at for e in h.events("late-orders") if isinstance(e, OrderPlaced)] == [at(30)]

        h.send(order(at=at(130)), partition=0)
        h.send(order(at=at(140)), partition=0)
        assert closed == [("k", Window(T0, at(60)), 3), ("k", Window(at(60), at(120)), 3)]  # each once
        # kept (closed) until expiry; the late event changed nothing
        assert h.table(table)[f"k@{ms(T0)}"] == Count(n=3)
        assert h.table(table)[f"k@{ms(at(120))}"] == Count(n=2)
        h.commit()
        first = h.rows(table)[f"k@{ms(T0)}"]
        assert (first.closed, first.end) == (True, ms(at(60)))
        assert h.rows(table)[f"k@{ms(at(120))}"].closed is False
        assert metric("evstream_stream_late_events_total", table="w") - late == 1


def test_hopping_windows_count_an_event_in_each_window_it_falls_in() -> None:
    app, table, _closed, changes = windowed_app(size=timedelta(minutes=2), hop=timedelta(minutes=1))
    assert [when(s) for s in table.windows_for(at(90))] == [T0, at(60)]
    with StreamHarness(app) as h:
        h.send(order(at=at(90)), partition=0)
        h.send(order(at=at(150)), partition=0)
        assert [len(c) for c in changes] == [2, 2]
        assert h.table(table) == {
            f"k@{ms(T0)}": Count(n=1),
            f"k@{ms(at(60))}": Count(n=2),
            f"k@{ms(at(120))}": Count(n=1),
        }


def test_expired_windows_are_deleted() -> None:
    app, table, closed, _changes = windowed_app(size=timedelta(minutes=1), expires=timedelta(minutes=2))
    first = f"k@{ms(T0)}"
    with StreamHarness(app) as h:
        h.send(order(at=T0), partition=0)
        h.send(order(at=at(90)), partition=0)  # closes [0, 60)
        h.commit()
        assert closed == [("k", Window(T0, at(60)), 1)]
        assert h.rows(table)[first].closed
        h.send(order(at=at(240)), partition=0)  # passes its end + expires (180)
        h.commit()
        assert first not in h.rows(table)
        assert (first, None) in h.changelogs[
            "unit-app-w-changelog"
        ]  # a tombstone: deleted from the changelog too
        assert closed[0] == ("k", Window(T0, at(60)), 1)


def test_a_window_passed_by_its_close_and_its_expiry_at_once_still_closes() -> None:
    """Stream time jumping past a window's end + expires in one event must still deliver its
    final result (on_close) before the window is deleted."""
    app, table, closed, _changes = windowed_app(size=timedelta(minutes=1))  # expires: size + grace
    with StreamHarness(app) as h:
        h.send(order(at=T0), partition=0)
        h.send(order(at=at(10)), partition=0)
        h.send(order(at=at(30 * 60)), partition=0)  # the next order comes half an hour later
        assert f"k@{ms(T0)}" not in h.rows(table)  # expired
        assert closed == [("k", Window(T0, at(60)), 2)]  # but closed first, once


def test_a_replayed_window_update_is_skipped() -> None:
    app, table, _closed, changes = windowed_app(size=timedelta(minutes=1), grace=timedelta(minutes=5))
    with StreamHarness(app) as h:
        record = h.send(order(at=T0), partition=0)
        h.commit()
        h.deliver([record])
        h.commit()
        assert changes[1] == []
        assert h.table(table) == {f"k@{ms(T0)}": Count(n=1)}


def session_app(
    **options: Any,
) -> tuple[App, SessionTable[Count], list[tuple[str, Window, int]], list[list[Any]]]:
    """Sessions (gap 5 min) of orders per key "k", merged by adding counts; async on_close."""
    app = new_app()
    orders = app.events_topic("orders")
    late = app.events_topic("late-orders")
    closed: list[tuple[str, Window, int]] = []
    changes: list[list[Any]] = []

    async def on_close(key: str, window: Window, value: Count, _r: Received) -> None:
        closed.append((key, window, value.n))

    sessions = app.session_table(
        "s",
        Count,
        gap=timedelta(minutes=5),
        merge=lambda a, b: Count(n=a.n + b.n),
        on_close=on_close,
        late_topic=late,
        **options,
    )

    @app.on(orders, OrderPlaced, updates=[sessions])
    async def track(event: OrderPlaced, _received: Received) -> None:
        changes.append(await sessions.update("k", event.placed_at, plus(1)))

    return app, sessions, closed, changes


def sessions_of(h: StreamHarness, table: TableState[Any]) -> dict[tuple[datetime, datetime], int]:
    found = {}
    for key, row in h.rows(table).items():
        if key.startswith("__"):
            continue
        assert row.start is not None
        assert row.end is not None
        found[(when(row.start), when(row.end))] = int(row.value["n"])
    return found


def minute(m: float) -> datetime:
    return T0 + timedelta(minutes=m)


def test_session_windows_join_merge_close_once_count_late_events_and_skip_replays() -> None:
    app, sessions, closed, changes = session_app(grace=timedelta(minutes=10), expires=timedelta(hours=1))
    late = metric("evstream_stream_late_events_total", table="s")

    def send(m: float) -> Record:
        return h.send(order(at=minute(m)), partition=0)

    with StreamHarness(app) as h:
        send(0)
        send(3)  # within the gap: the same session
        assert sessions_of(h, sessions) == {(minute(0), minute(3)): 2}
        send(12)  # 9 min after the last event: a new session
        assert sessions_of(h, sessions) == {(minute(0), minute(3)): 2, (minute(12), minute(12)): 1}
        send(7)  # late but within the grace, 4 and 5 min from both: bridges them
        assert sessions_of(h, sessions) == {(minute(0), minute(12)): 4}  # merge(2, 1) + 1
        assert [c.after.n for c in changes[-1]] == [4]
        replayed = send(20)  # 8 min after: a new session
        assert closed == []  # stream time 20 < 12 + gap 5 + grace 10
        send(30)  # 30 >= 27: the merged session closes
        assert closed == [("k", Window(minute(0), minute(12)), 4)]
        send(1)  # its session would be closed: late
        assert changes[-1] == []
        assert metric("evstream_stream_late_events_total", table="s") - late == 1
        assert [e.placed_at for e in h.events("late-orders") if isinstance(e, OrderPlaced)] == [minute(1)]
        h.commit()
        h.deliver([replayed])  # processed again: skipped
        assert changes[-1] == []
        send(40)  # 40 >= 20 + 5 + 10: the session of 20 closes
        assert closed == [("k", Window(minute(0), minute(12)), 4), ("k", Window(minute(20), minute(20)), 1)]
        assert sessions_of(h, sessions) == {
            (minute(0), minute(12)): 4,
            (minute(20), minute(20)): 1,
            (minute(30), minute(30)): 1,
            (minute(40), minute(40)): 1,
        }
        assert h.rows(sessions)[f"k@{ms(minute(0))}"].closed


def test_a_session_closes_with_the_default_expiry() -> None:
    """``session_table`` defaults ``expires`` to ``grace``: stream time passing a session's last
    event + gap + grace must still close it (on_close, once) before it expires."""
    app, sessions, closed, _changes = session_app(grace=timedelta(minutes=1))
    with StreamHarness(app) as h:
        h.send(order(at=minute(0)), partition=0)
        h.send(order(at=minute(1)), partition=0)
        h.send(order(at=minute(30)), partition=0)
        assert closed == [("k", Window(minute(0), minute(1)), 2)]
        assert (minute(0), minute(1)) not in sessions_of(h, sessions)


def test_a_session_bridge_needs_merge() -> None:
    app = new_app()
    orders = app.events_topic("orders")
    sessions = app.session_table("s", Count, gap=timedelta(minutes=5), grace=timedelta(minutes=10))

    @app.on(orders, OrderPlaced, updates=[sessions])
    async def track(event: OrderPlaced, _received: Received) -> None:
        await sessions.update("k", event.placed_at, plus(1))

    with StreamHarness(app) as h:
        h.send(order(at=minute(0)), partition=0)
        h.send(order(at=minute(10)), partition=0)
        with pytest.raises(ConfigError, match="give merge="):
            h.send(order(at=minute(5)), partition=0)
    with pytest.raises(ConfigError, match="gap must be positive"):
        app.session_table("zero", Count, gap=timedelta(0))


# -- lookups, publishes, dead letters, re-keying -------------------------------------------------------


def test_a_lookup_of_a_missing_row_emits_without_or_skips() -> None:
    app = new_app()
    orders, customers = app.events_topic("orders"), app.events_topic("customers")
    people, counts = app.table("people", Count), app.table("counts", Count)
    seen: list[Count | None] = []

    @app.on(customers, CustomerRegistered, updates=[people])
    def register(event: CustomerRegistered, _received: Received) -> None:
        people.update(event.customer_id, plus(1))

    @app.on(orders, OrderPlaced, lookups=[people], updates=[counts])
    async def enrich(event: OrderPlaced, _received: Received) -> None:
        seen.append(people.lookup(event.customer_id))  # emit_without: None
        people.lookup(event.customer_id, missing="skip")  # SkipEvent: the rest does not run
        counts.update(event.customer_id, plus(1))

    without = metric("evstream_stream_join_missing_total", table="people", missing="emit_without")
    skipped = metric("evstream_stream_join_missing_total", table="people", missing="skip")
    with StreamHarness(app) as h:
        h.send(order("A"), partition=0)
        assert seen == [None]
        assert h.table(counts) == {}  # skipped: no effect
        h.send(customer("A"), partition=0)
        h.send(order("A"), partition=0)
        assert seen == [None, Count(n=1)]
        assert h.table(counts) == {"A": Count(n=1)}
    assert metric("evstream_stream_join_missing_total", table="people", missing="emit_without") - without == 1
    assert metric("evstream_stream_join_missing_total", table="people", missing="skip") - skipped == 1


def test_publish_gives_deterministic_ids_caused_by_the_event() -> None:
    app = new_app()
    orders, tiers = app.events_topic("orders"), app.events_topic("customer-tiers")
    returned: list[Any] = []

    @app.on(orders, OrderPlaced)
    async def derive(event: OrderPlaced, received: Received) -> None:
        for tier in (CustomerTier.BRONZE, CustomerTier.SILVER):
            changed = CustomerTierChanged(
                customer_id=event.customer_id, tier=tier, orders=1, changed_at=event.placed_at
            )
            returned.append(await app.publish(changed, cause=received, topic=tiers))

    with StreamHarness(app) as h:
        record = h.send(order("A"), partition=0)
        h.deliver([record])  # processed again (a replay): the same ids again
        h.send(order("A"), partition=0)  # another event: other ids
        cause = Envelope.from_headers(record.headers())
        envelopes = [w.envelope for w in h.written["customer-tiers"]]
        ids = [e.event_id for e in envelopes]
        assert ids == returned
        assert ids[0:2] == ids[2:4]
        assert len(set(ids)) == 4
        assert {e.causation_id for e in envelopes[:4]} == {str(cause.event_id)}
        assert {e.correlation_id for e in envelopes[:4]} == {str(cause.event_id)}  # the cause had none
        assert [e.event_type for e in envelopes] == ["CustomerTierChanged"] * 6
        assert [w.key for w in h.written["customer-tiers"][:2]] == [b"A", b"A"]
        assert [e.tier for e in h.events("customer-tiers") if isinstance(e, CustomerTierChanged)][:2] == [
            CustomerTier.BRONZE,
            CustomerTier.SILVER,
        ]


def test_an_undecodable_record_goes_to_the_dead_letter_topic() -> None:
    app = new_app()
    orders = app.events_topic("orders")
    seen: list[OrderPlaced] = []

    @app.on(orders, OrderPlaced)
    async def handle(event: OrderPlaced, _received: Received) -> None:
        seen.append(event)

    with StreamHarness(app) as h:
        h.send_raw("orders", b"not avro at all", key=b"o-1", partition=2)
        h.send(order("A"), partition=0)  # the next record goes on
        [dead] = h.dead_letters()
        assert dead.topic == "unit-app-dlq"
        assert h.written["unit-app-dlq"] == [dead]
        assert (dead.key, dead.value) == (b"o-1", b"not avro at all")
        assert dead.header("evstream.dlq.reason") == "undecodable"
        assert dead.header("evstream.dlq.group") == "unit-app"  # a stream app's group: its app id
        assert app.processor.dead_lettered == 1
        assert [e.customer_id for e in seen] == ["A"]


def test_group_by_forwards_each_event_to_an_internal_topic_keyed_by_the_function() -> None:
    app = new_app()
    orders = app.events_topic("orders")
    by_customer = app.group_by(orders, OrderPlaced, key=lambda o: o.customer_id, name="by-customer")
    assert (by_customer.name, by_customer.partitions, by_customer.internal) == (
        "unit-app-by-customer",
        app.settings.partitions,
        True,
    )
    assert app.describe() == [("orders", ("OrderPlaced",))]
    seen: list[tuple[str, int, str, int, bytes | None]] = []

    @app.on(by_customer, OrderPlaced)
    async def handle(_event: OrderPlaced, r: Received) -> None:
        seen.append((r.topic, r.offset, r.origin, r.origin_offset, r.key))

    with StreamHarness(app) as h:
        h.send(order("c-9", order_id="o-1"), partition=1)
        record = h.send(order("c-7", order_id="o-2"), partition=1)
        first, second = h.written["unit-app-by-customer"]
        assert (second.key, second.value) == (b"c-7", record.value())  # the bytes as they were
        assert second.envelope == Envelope.from_headers(record.headers())  # and the envelope
        assert [first.header(ORIGIN_HEADER), second.header(ORIGIN_HEADER)] == ["orders:1:0", "orders:1:1"]
        assert [(t, origin, at, key) for t, _offset, origin, at, key in seen] == [
            ("unit-app-by-customer", "orders:1", 0, b"c-9"),
            ("unit-app-by-customer", "orders:1", 1, b"c-7"),
        ]


# -- the co-partitioning check and the demo ---------------------------------------------------------


def test_copartitioning_is_checked_with_a_clear_error() -> None:
    app = demo_app()
    app.check_copartitioning(lambda name: None)  # as declared: 3 and 3
    counts = {f"{app.app_id}-orders-by-customer": 4}
    with pytest.raises(CopartitioningError, match="has 4 partitions but table 'customers' has 3") as info:
        app.check_copartitioning(counts.get)
    assert info.value.topics == {
        f"{app.app_id}-orders-by-customer": 4,
        f"{app.app_id}-customers-changelog": 3,
    }


def test_the_demo_is_declared_on_the_api() -> None:
    app = demo_app()
    assert app.describe() == [
        ("customers", ("CustomerRegistered", "CustomerUpdated")),
        ("orders", ("OrderPlaced",)),
        (f"{app.app_id}-orders-by-customer", ("OrderPlaced",)),
    ]
    assert [t.name for t in app.tables] == ["customers", "customer-totals", "revenue"]
    assert any(
        isinstance(e, OrderPlaced) for e in mixed_events(50, seed=1)
    )  # the factories still make orders


def test_the_demo_ends_with_exact_totals_after_a_crash_and_a_replay() -> None:
    app = demo_app()
    people, totals, revenue = app.tables
    by_customer = f"{app.app_id}-orders-by-customer"
    events = mixed_events(2000, seed=11)
    with StreamHarness(app) as h:
        for event in events[:800]:
            h.send(event)
        h.commit()
        mark = len(h.written[by_customer])
        uncommitted = [h.send(event) for event in events[800:1400]]
        h.crash()  # the worker dies before its commit; Kafka still has what it read and wrote
        h.deliver([as_record(w) for w in h.written[by_customer][mark:]])  # its re-keyed records, read again
        h.deliver(uncommitted)  # its source records, read again (and forwarded again)
        for event in events[1400:]:
            h.send(event)
        h.commit()

        orders = [e for e in events if isinstance(e, OrderPlaced)]
        expected = Counter(o.customer_id for o in orders)
        sums: dict[str, dict[str, int]] = {}
        for o in orders:
            per = sums.setdefault(o.customer_id, {})
            per[o.total.currency.value] = per.get(o.total.currency.value, 0) + o.total.amount_minor
        found: dict[str, CustomerTotals] = h.table(totals)
        assert {k: t.orders for k, t in found.items()} == dict(expected)
        assert {k: t.total_minor for k, t in found.items()} == sums
        assert {k: t.tier for k, t in found.items()} == {k: tier_for(n) for k, n in expected.items()}

        windows: dict[str, Revenue] = h.table(revenue)
        assert sum(r.orders for r in windows.values()) == len(orders)
        assert sum(r.sum_minor for r in windows.values()) == sum(o.total.amount_minor for o in orders)

        names: dict[str, str] = {}
        emails: dict[str, str] = {}
        for e in events:
            if isinstance(e, CustomerRegistered | CustomerUpdated):
                if e.name:
                    names[e.customer_id] = e.name
                if e.email:
                    emails[e.customer_id] = e.email
        persons: dict[str, Person] = h.table(people)
        assert {k: p.name for k, p in persons.items()} == names
        assert {k: p.email for k, p in persons.items() if p.email} == emails

        # a tier change per threshold crossed (1, 3, 10 orders); re-emits of the replay keep their ids
        ids = [w.envelope.event_id for w in h.written["customer-tiers"]]
        crossed = sum(sum(1 for t in (1, 3, 10) if n >= t) for n in expected.values())
        assert len(set(ids)) == crossed
        assert len(ids) > crossed


# -- joins that wait -----------------------------------------------------------------------------------


def waiting_app(
    then: WaitThen = "emit_without", max_events: int = 10
) -> tuple[App, Table[Count], Waiting, list[tuple[int, str | None]]]:
    """customers write ``people``; orders look their customer up there, waiting for a missing row."""
    app = new_app()
    people = app.table("people", Count)
    orders, customers = app.events_topic("orders"), app.events_topic("customers")
    seen: list[tuple[int, str | None]] = []

    @app.on(customers, CustomerRegistered, updates=[people])
    async def register(event: CustomerRegistered, _received: Received) -> None:
        people.update(event.customer_id, plus(1))

    @app.on(orders, OrderPlaced, lookups=[people], wait=Wait(timedelta(seconds=30), max_events, then))
    async def enrich(event: OrderPlaced, r: Received) -> None:
        row = people.lookup(event.customer_id, missing="wait")
        seen.append((r.offset, None if row is None else event.customer_id))

    waiting = app.routes[1].waiting
    assert waiting is not None
    return app, people, waiting, seen


def queued(h: StreamHarness, waiting: Waiting) -> list[tuple[int, str | None]]:
    """The held records (offset, key of the row it waits for: the heads only), by partition, as stored."""
    return [
        (row.value["offset"], row.value["table_key"]) for _key, row in sorted(h.rows(waiting.state).items())
    ]


def later(seconds: float) -> datetime:
    """Wall-clock time ``seconds`` from now (held events count their wait from their arrival)."""
    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_wait_holds_a_partition_in_order_until_the_row_arrives_and_keeps_the_queue_durable() -> None:
    app, _people, waiting, seen = waiting_app()
    with StreamHarness(app) as h:
        h.send(order("A"), partition=0)  # no row: waits
        held_b = h.send(order("B"), partition=0)  # B has none either: behind it
        held_a = h.send(order("A"), partition=0)  # A's row will be there: still behind
        h.send(order("Z"), partition=1)  # another partition goes on (and waits on its own)
        assert seen == []
        h.deliver([held_b])  # a replay of a held record: not held twice
        assert queued(h, waiting) == [(0, "A"), (1, None), (2, None), (0, "Z")]
        h.send(customer("A"), partition=0)  # the row: 0 runs, then 1 misses B and waits, 2 behind it
        assert seen == [(0, "A")]
        assert queued(h, waiting)[:2] == [(1, "B"), (2, None)]

        h.commit()
        h.crash()  # the queue is state: after a restart it comes back from the table
        h.deliver([held_a])  # a replay after the restart: still held once
        assert queued(h, waiting)[:2] == [(1, "B"), (2, None)]
        h.send(customer("B"), partition=0)
        assert seen == [(0, "A"), (1, "B"), (2, "A")]
        h.commit()
        assert queued(h, waiting) == [(0, "Z")]  # released records leave no state behind


def test_wait_after_a_restart_releases_a_row_written_meanwhile_on_the_timer() -> None:
    app, _people, waiting, seen = waiting_app()
    with StreamHarness(app) as h:
        h.send(order("A"), partition=0)
        h.send(order("A"), partition=0)
        h.commit()
        h.crash()
        h.send(customer("A"), partition=0)  # written before this worker looked at the queue again
        h.tick()  # the 1 s timer finds the row
        assert seen == [(0, "A"), (1, "A")]
        h.commit()
        assert queued(h, waiting) == []


def test_wait_applies_then_to_the_oldest_when_full_and_after_max_wait() -> None:
    app, _people, waiting, seen = waiting_app("emit_without", max_events=2)
    expired = metric("evstream_stream_join_wait_expired_total", handler="enrich", then="emit_without")
    with StreamHarness(app) as h:
        h.send(order("A"), partition=0)
        h.send(order("A"), partition=0)
        h.send(order("C"), partition=0)  # full: 0 gets "emit_without" now, 1 misses A again
        assert seen == [(0, None)]
        assert queued(h, waiting) == [(1, "A"), (2, None)]
        h.tick(now=later(29))  # not yet
        assert seen == [(0, None)]
        h.tick(now=later(31))  # both waited 30 s
        assert seen == [(0, None), (1, None), (2, None)]
        assert queued(h, waiting) == []
    assert (
        metric("evstream_stream_join_wait_expired_total", handler="enrich", then="emit_without") - expired
        == 3
    )


def test_wait_then_skip_drops_the_head_and_releases_the_ones_behind() -> None:
    app, _people, waiting, seen = waiting_app("skip")
    with StreamHarness(app) as h:
        h.send(order("A"), partition=0)
        h.send(customer("B"), partition=0)
        h.send(order("B"), partition=0)  # has its row, but waits behind 0
        assert seen == []
        h.tick(now=later(31))
        assert seen == [(1, "B")]  # 0 skipped (an inner join's drop), 1 released after it
        assert queued(h, waiting) == []


def test_wait_then_dead_letter_forwards_to_the_unjoined_topic() -> None:
    app, _people, waiting, seen = waiting_app("dead_letter")
    assert "unit-app-enrich-unjoined" in app.topics
    with StreamHarness(app) as h:
        record = h.send(order("A"), partition=0)
        h.tick(now=later(31))
        assert seen == []
        [unjoined] = h.written["unit-app-enrich-unjoined"]
        assert (unjoined.key, unjoined.value) == (record.key(), record.value())
        assert unjoined.header(ORIGIN_HEADER) == "orders:0:0"
        assert queued(h, waiting) == []


def test_wait_is_declared_with_its_tables_and_comes_before_updates() -> None:
    app = new_app()
    people = app.table("people", Count)
    orders = app.events_topic("orders")
    with pytest.raises(ConfigError, match="needs the tables it waits for"):
        app.on(orders, wait=Wait(timedelta(seconds=1)))(lambda e, r: None)
    with pytest.raises(ConfigError):
        Wait(timedelta(0))
    with pytest.raises(ConfigError):
        Wait(timedelta(seconds=1), max_events=0)

    @app.on(orders, OrderPlaced, lookups=[people])
    async def no_wait(event: OrderPlaced, _r: Received) -> None:
        people.lookup(event.customer_id, missing="wait")

    with StreamHarness(app) as h, pytest.raises(ConfigError, match="declared with"):
        h.send(order("A"), partition=0)

    app2 = new_app()
    people2, totals2 = app2.table("people", Count), app2.table("totals", Count)

    @app2.on(
        app2.events_topic("orders"), lookups=[people2], updates=[totals2], wait=Wait(timedelta(seconds=1))
    )
    async def late_lookup(event: OrderPlaced, _r: Received) -> None:
        totals2.update("k", plus(1))
        people2.lookup(event.customer_id, missing="wait")

    with StreamHarness(app2) as h, pytest.raises(ConfigError, match="before the handler's updates"):
        h.send(order("A"), partition=0)


def test_a_foreign_record_gets_a_derived_envelope_and_its_derived_events_follow_it() -> None:
    """A record written by Confluent's own serializer carries no envelope headers: the handler
    sees the envelope derived from its position (stable id), and a re-keyed copy and a derived
    event keep that id as their cause, replayed or not."""
    from evstream.schemas.ids import derived_event_id  # noqa: PLC0415

    app = new_app()
    orders, tiers = app.events_topic("orders"), app.events_topic("customer-tiers")
    by_customer = app.group_by(orders, OrderPlaced, key=lambda o: o.customer_id, name="by-customer")
    seen: list[Received] = []

    @app.on(by_customer, OrderPlaced)
    def derive(event: OrderPlaced, received: Received) -> None:
        seen.append(received)
        changed = CustomerTierChanged(customer_id=event.customer_id, tier=CustomerTier.BRONZE, orders=1,
                                      changed_at=event.placed_at)  # fmt: skip
        app.publish(changed, cause=received, topic=tiers)

    with StreamHarness(app) as h:
        native = h.record(order("A"), partition=1)
        foreign = Record("orders", 1, native.offset(), b"A", native.value(), [], ms(T0))  # no headers
        h.deliver([foreign])
        h.deliver([foreign])  # read again: the same derived id
        expected_id = derived_event_id("orders", 1, native.offset())
        assert [r.envelope.event_id for r in seen] == [expected_id, expected_id]
        assert seen[0].envelope.event_type == "OrderPlaced"
        assert seen[0].origin == "orders:1"
        forwarded = h.written["unit-app-by-customer"][0]
        assert forwarded.envelope.event_id == expected_id  # the derived envelope travels with it
        published = [w.envelope for w in h.written["customer-tiers"]]
        assert [e.causation_id for e in published] == [str(expected_id)] * 2
        assert published[0].event_id == published[1].event_id


def test_a_faust_era_row_is_read() -> None:
    """Changelogs written before the native engine (``{"v": ..., "o": ...}``) still recover."""
    from evstream.streams.state.records import Row  # noqa: PLC0415

    row = Row.from_bytes(b'{"v": {"n": 3}, "o": {"orders:2": 41}}')
    assert (row.value, row.applied) == ({"n": 3}, {"orders:2": 41})
    assert Row.from_bytes(row.to_bytes()) == row
