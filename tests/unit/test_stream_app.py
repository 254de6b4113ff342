"""evstream.streams.App without a broker: offset-deduplicated updates of constant size, the
write-behind order, windows (tumbling, hopping, close, grace, late, expiry), joins and the
co-partitioning check."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP
from pydantic import BaseModel

from evstream.schemas import Envelope
from evstream.schemas.domain import CATALOG, OrderPlaced
from evstream.settings import KafkaSettings, RegistrySettings
from evstream.streams import App, CopartitioningError, Received, SkipEvent
from evstream.streams.app import _RECEIVED
from evstream.streams.demo import create_app
from tests.factories import mixed_events

T0 = datetime(2026, 11, 1, tzinfo=UTC)


class Count(BaseModel):
    n: int = 0


def new_app() -> App:
    return App(
        "unit-app",
        catalog=CATALOG,
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        registry=RegistrySettings(),
    )


def received(offset: int, *, partition: int = 0, origin: str = "orders:0", topic: str = "t") -> Received:
    message = SimpleNamespace(partition=partition, offset=offset, tp=TP(topic, partition), key=b"k")
    envelope = Envelope(event_type="OrderPlaced")
    return Received(
        event=None,  # type: ignore[arg-type]  # the tables never look at it
        envelope=envelope,
        topic=topic,
        partition=partition,
        offset=offset,
        origin=origin,
        origin_offset=offset,
        raw=SimpleNamespace(message=message, headers=[]),
    )


def handling(r: Received) -> Any:
    class Scope:
        def __enter__(self) -> Received:
            self.token = _RECEIVED.set(r)
            return r

        def __exit__(self, *exc: object) -> None:
            _RECEIVED.reset(self.token)

    return Scope()


def fake_tables(app: App) -> None:
    for state in app._states:
        state.faust = {}


def commit(app: App) -> None:
    """What the checkpoint does after the producer flush: pending writes land in the tables."""
    for state in app._states:
        state._inflight, state._dirty = state._dirty, {}
        for key, pending in state._inflight.items():
            if pending.value is None:
                state.faust.pop(key, None)
            else:
                state.faust[key] = pending.value
        state._inflight = {}


def test_an_update_is_applied_once_per_source_offset_and_the_state_stays_small() -> None:
    app = new_app()
    counts = app.table("counts", Count)
    fake_tables(app)
    sizes = []
    for offset in range(1000):
        with handling(received(offset)):
            change = counts.update("k", lambda c: Count(n=c.n + 1))
            assert change is not None
            assert change.after.n == offset + 1
        commit(app)
        sizes.append(len(json.dumps(counts.faust["k"])))
    assert counts.get("k") == Count(n=1000)
    assert sizes[-1] - sizes[100] <= 2  # constant size: only the digits of n and the offset grow
    for offset in (0, 500, 999):  # replays after a crash: skipped
        with handling(received(offset)):
            assert counts.update("k", lambda c: Count(n=c.n + 1)) is None
    with handling(received(7, origin="orders:3")):  # another source partition: its own offset
        assert counts.update("k", lambda c: Count(n=c.n + 1)) is not None
    commit(app)
    assert counts.faust["k"]["o"] == {"orders:0": 999, "orders:3": 7}


def test_a_replayed_event_decides_once_for_every_update_of_a_key() -> None:
    app = new_app()
    counts = app.table("counts", Count)
    fake_tables(app)
    with handling(received(5)):
        counts.update("k", lambda c: Count(n=c.n + 1))
        counts.update("k", lambda c: Count(n=c.n + 10))
    commit(app)
    with handling(received(5)):  # processed again: both updates skipped, not just the first
        assert counts.update("k", lambda c: Count(n=c.n + 1)) is None
        assert counts.update("k", lambda c: Count(n=c.n + 10)) is None
    assert counts.get("k") == Count(n=11)


def test_writes_wait_for_the_commit_and_reads_see_them_before() -> None:
    app = new_app()
    counts = app.table("counts", Count)
    fake_tables(app)
    with handling(received(1)):
        counts.update("k", lambda c: Count(n=c.n + 1))
    assert counts.faust == {}  # nothing in the changelog before the commit
    assert counts.get("k") == Count(n=1)
    commit(app)
    assert counts.faust["k"]["v"] == {"n": 1}


def test_an_update_outside_a_handler_is_refused() -> None:
    app = new_app()
    counts = app.table("counts", Count)
    with pytest.raises(Exception, match="inside a handler"):
        counts.update("k", lambda c: c)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def windowed(**options: Any) -> tuple[App, Any, list[tuple[str, datetime, int]]]:
    app = new_app()
    app.faust.rebalancing_count = 1  # no rebalance in these tests
    closed: list[tuple[str, datetime, int]] = []

    def on_close(key: str, window: Any, value: Count, r: Received) -> None:
        closed.append((key, window.start, value.n))

    table = app.windowed_table("w", Count, on_close=on_close, **options)
    fake_tables(app)
    return app, table, closed


def test_tumbling_windows_close_after_the_grace_and_late_events_are_counted() -> None:
    app, table, closed = windowed(
        size=timedelta(minutes=1), grace=timedelta(seconds=10), expires=timedelta(minutes=10)
    )
    times = [0, 20, 59, 65, 69, 75, 30, 130]  # seconds after T0; 30 arrives after the 1st window closed
    for offset, second in enumerate(times):
        with handling(received(offset)):
            run(table.update("k", T0 + timedelta(seconds=second), lambda c: Count(n=c.n + 1)))
        if offset == 4:
            assert closed == []  # stream time 69 < end 60 + grace 10
    assert closed == [("k", T0, 3), ("k", T0 + timedelta(minutes=1), 3)]
    assert table.get("k", T0) == Count(n=3)  # kept (closed) until expiry: the late event changed nothing
    commit(app)
    assert table.faust[f"k@{int(T0.timestamp() * 1000)}"]["closed"] is True


def test_hopping_windows_count_an_event_in_each_window_it_falls_in() -> None:
    _app, table, _closed = windowed(size=timedelta(minutes=2), hop=timedelta(minutes=1))
    assert [datetime.fromtimestamp(s / 1000, UTC) for s in table.windows_for(T0 + timedelta(seconds=90))] == [
        T0,
        T0 + timedelta(minutes=1),
    ]
    with handling(received(0)):
        changes = run(table.update("k", T0 + timedelta(seconds=90), lambda c: Count(n=c.n + 1)))
    assert len(changes) == 2


def test_expired_windows_are_deleted() -> None:
    app, table, _closed = windowed(size=timedelta(minutes=1), expires=timedelta(minutes=2))
    with handling(received(0)):
        run(table.update("k", T0, lambda c: Count(n=c.n + 1)))
    commit(app)
    with handling(received(1)):
        run(table.update("k", T0 + timedelta(minutes=4), lambda c: Count(n=c.n + 1)))
    commit(app)
    assert table.get("k", T0) is None
    assert f"k@{int(T0.timestamp() * 1000)}" not in table.faust


def test_a_replayed_window_update_is_skipped() -> None:
    app, table, _closed = windowed(size=timedelta(minutes=1), grace=timedelta(minutes=5))
    for _ in range(2):
        with handling(received(3)):
            run(table.update("k", T0, lambda c: Count(n=c.n + 1)))
        commit(app)
    assert table.get("k", T0) == Count(n=1)


def test_a_lookup_of_a_missing_row_emits_without_or_skips() -> None:
    app = new_app()
    people = app.table("people", Count)
    fake_tables(app)
    assert people.lookup("nobody") is None
    with pytest.raises(SkipEvent):
        people.lookup("nobody", missing="skip")


def test_copartitioning_is_checked_with_a_clear_error() -> None:
    app = create_app(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"), registry=RegistrySettings())
    app.check_copartitioning(lambda name: None)  # as declared: 3 and 3
    counts = {f"{app.app_id}-orders-by-customer": 4}
    with pytest.raises(CopartitioningError, match="has 4 partitions but table 'customers' has 3") as info:
        app.check_copartitioning(counts.get)
    assert info.value.topics[f"{app.app_id}-orders-by-customer"] == 4


def test_the_demo_is_declared_on_the_api() -> None:
    app = create_app(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"), registry=RegistrySettings())
    assert [types for _topic, types in app.routes()] == [
        ("CustomerRegistered", "CustomerUpdated"),
        ("OrderPlaced",),
        ("OrderPlaced",),
    ]
    orders = [e for e in mixed_events(50, seed=1) if isinstance(e, OrderPlaced)]
    assert orders  # the factories still make orders for the stream tests


def test_the_faust_clients_get_the_connection_of_the_settings(tmp_path: Any) -> None:
    """SCRAM-SHA-512 over verified TLS reaches every aiokafka client faust makes (consumer,
    producer, topic creation), and SSL alone is an SSL context; PLAINTEXT stays plain."""
    import ssl  # noqa: PLC0415

    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth  # noqa: PLC0415

    (tmp_path / "pw").write_text("s3cret-pw\n")
    secure = KafkaSettings(
        bootstrap_servers="127.0.0.1:1",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="app",
        sasl_password_file=tmp_path / "pw",
    )
    app = App("unit-app", catalog=CATALOG, kafka=secure, registry=RegistrySettings())
    auth = credentials_to_aiokafka_auth(app.faust.conf.broker_credentials, app.faust.conf.ssl_context)
    assert {k: v for k, v in auth.items() if k != "ssl_context"} == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "app",
        "sasl_plain_password": "s3cret-pw",
    }
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert "s3cret-pw" not in repr(app.faust.conf.broker_credentials)
    assert app.faust.conf.broker_client_id == "evstream"

    tls = KafkaSettings(bootstrap_servers="127.0.0.1:1", security_protocol="SSL")
    ssl_app = App("unit-app", catalog=CATALOG, kafka=tls, registry=RegistrySettings())
    auth = credentials_to_aiokafka_auth(ssl_app.faust.conf.broker_credentials, None)
    assert auth["security_protocol"] == "SSL"
    assert isinstance(auth["ssl_context"], ssl.SSLContext)
    assert credentials_to_aiokafka_auth(new_app().faust.conf.broker_credentials, None) == {
        "security_protocol": "PLAINTEXT"
    }


def test_group_by_forwards_each_event_to_an_internal_topic_keyed_by_the_function() -> None:
    app = new_app()
    orders = app.events_topic("orders")
    by_customer = app.group_by(orders, OrderPlaced, key=lambda o: o.customer_id, name="by-customer")
    assert (by_customer.name, by_customer.partitions) == ("unit-app-by-customer", app.settings.partitions)
    assert app.routes() == [("orders", ("OrderPlaced",))]
    sent: list[tuple[Received, str, str | None]] = []

    async def forward(r: Received, topic: Any, *, key: str | None = None) -> None:
        sent.append((r, topic.name, key))

    app.forward = forward  # type: ignore[method-assign, assignment]
    order = next(e for e in mixed_events(10, seed=1) if isinstance(e, OrderPlaced))
    r = received(7)

    async def handle() -> None:
        await app._routes[0].handler(order, r)

    asyncio.run(handle())
    assert sent == [(r, "unit-app-by-customer", order.customer_id)]


class HeldCodec:
    """The topic codec of the wait tests: a held record's bytes name its event."""

    def __init__(self) -> None:
        self.events: dict[bytes, OrderPlaced] = {}

    def loads(self, data: bytes) -> OrderPlaced:
        return self.events[data]


def order_event(codec: HeldCodec, offset: int, customer: str) -> Received:
    base = next(e for e in mixed_events(10, seed=1) if isinstance(e, OrderPlaced))
    event = base.model_copy(update={"customer_id": customer})
    value = f"order-{offset}".encode()
    codec.events[value] = event
    r = received(offset, topic="orders", origin="orders:0")
    r.event = event
    r.raw.message.value, r.raw.message.timestamp = value, 1.0
    return r


def waiting_app(then: str, max_events: int = 10) -> tuple[App, Any, HeldCodec, list[tuple[int, str | None]]]:
    from evstream.streams import Wait  # noqa: PLC0415

    app = new_app()
    people = app.table("people", Count)
    orders = app.events_topic("orders")
    seen: list[tuple[int, str | None]] = []

    @app.on(orders, OrderPlaced, lookups=[people], wait=Wait(timedelta(seconds=30), max_events, then))  # type: ignore[arg-type]
    async def enrich(order: OrderPlaced, r: Received) -> None:
        row = people.lookup(order.customer_id, missing="wait")
        seen.append((r.offset, None if row is None else order.customer_id))

    fake_tables(app)
    codec = HeldCodec()
    orders.codec = codec  # type: ignore[assignment]
    return app, people, codec, seen


def waits_of(route: Any) -> Any:
    assert route.waiting is not None
    return route.waiting


def register(app: App, people: Any, customer: str, offset: int) -> None:
    """The customers handler writing a row (its hook marks the held events waiting for it)."""
    with handling(received(offset, topic="customers", origin="customers:0")):
        people.update(customer, lambda c: Count(n=c.n + 1))


def test_wait_holds_a_partition_in_order_until_the_row_arrives_and_keeps_the_queue_durable() -> None:
    app, people, codec, seen = waiting_app("emit_without")
    route = app._routes[0]
    waiting = waits_of(route)

    async def story() -> None:
        await app._process(route, order_event(codec, 0, "A"))  # no row: waits
        await app._process(route, order_event(codec, 1, "B"))  # B has none either: behind it
        await app._process(route, order_event(codec, 2, "A"))  # A's row will be there: still behind
        assert seen == []
        await app._process(route, order_event(codec, 1, "B"))  # a replay of a held record
        assert len(waiting.queue(0)) == 3
        register(app, people, "A", 0)
        await app._release()
        assert seen == [(0, "A")]  # then B (offset 1) misses its row: it waits, 2 stays behind it
        assert [entry["wk"] for _key, entry in waiting.queue(0)] == ["B", None]
        commit(app)  # the queue is state: after a rebalance (or a crash) it comes back from the table
        app.faust.rebalancing_count += 1
        assert [entry["o"] for _key, entry in waiting.queue(0)] == [1, 2]
        register(app, people, "B", 1)
        await app._release()
        assert seen == [(0, "A"), (1, "B"), (2, "A")]
        assert not waiting.queue(0)
        commit(app)
        assert waiting.state.faust == {}  # released records leave no state behind

    asyncio.run(story())


def test_wait_applies_then_after_max_wait_or_to_the_oldest_when_full() -> None:
    app, people, codec, seen = waiting_app("emit_without", max_events=2)
    route = app._routes[0]
    waiting = waits_of(route)

    async def story() -> None:
        await app._process(route, order_event(codec, 0, "A"))
        await app._process(route, order_event(codec, 1, "A"))
        await app._process(route, order_event(codec, 2, "C"))  # full: 0 gets "emit_without" now
        assert seen[0] == (0, None)
        assert [entry["o"] for _key, entry in waiting.queue(0)] == [1, 2]  # 1 misses A again
        head = waiting.queue(0)[0][1]
        await waiting.tick([0], now_ms=head["since"] + 29_000)  # not yet
        assert len(seen) == 1
        await waiting.tick([0], now_ms=head["since"] + 31_000)  # both waited 30 s
        assert seen == [(0, None), (1, None), (2, None)]

    asyncio.run(story())

    app, people, codec, seen = waiting_app("skip")
    route = app._routes[0]
    waiting = waits_of(route)

    async def skipped() -> None:
        await app._process(route, order_event(codec, 0, "A"))
        register(app, people, "B", 0)
        await app._process(route, order_event(codec, 1, "B"))  # has its row, but waits behind 0
        head = waiting.queue(0)[0][1]
        await waiting.tick([0], now_ms=head["since"] + 31_000)
        assert seen == [(1, "B")]  # 0 skipped (an inner join's drop), 1 released after it

    asyncio.run(skipped())


def test_wait_is_declared_with_its_tables_and_comes_before_updates() -> None:
    from evstream.errors import ConfigError  # noqa: PLC0415
    from evstream.streams import Wait  # noqa: PLC0415

    app = new_app()
    people, totals = app.table("people", Count), app.table("totals", Count)
    orders = app.events_topic("orders")
    with pytest.raises(ConfigError, match="needs the tables it waits for"):
        app.on(orders, wait=Wait(timedelta(seconds=1)))(lambda e, r: None)  # type: ignore[arg-type, return-value]
    with pytest.raises(ConfigError):
        Wait(timedelta(0))
    fake_tables(app)
    with handling(received(0)), pytest.raises(ConfigError, match="declared with"):
        people.lookup("x", missing="wait")  # no wait= on its handler
    app2, people2, codec, _seen = waiting_app("skip")

    @app2.on(app2.events_topic("more"), lookups=[people2], wait=Wait(timedelta(seconds=1)))
    async def late_lookup(order: Any, r: Received) -> None:
        totals.update("k", lambda c: c)
        people2.lookup("x", missing="wait")

    fake_tables(app2)
    with pytest.raises(ConfigError, match="before the handler's updates"):
        asyncio.run(app2._handle(app2._routes[1], order_event(codec, 0, "A")))
