"""evstream.streams.transport, for users' own faust apps: a faust.App consumes through it, the fetcher
gets a copy of the active partitions, partitions without a committed offset are rewound after a
rebalance, and refused ACLs surface as typed errors."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]  # no py.typed
from aiokafka.consumer.group_coordinator import GroupCoordinator  # type: ignore[import-untyped]
from aiokafka.errors import (  # type: ignore[import-untyped]
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
)
from faust.transport.consumer import ThreadDelegateConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from evstream.errors import AuthorizationError, GroupAuthorizationError
from evstream.streams import transport


class FakeAiokafka:
    def __init__(self) -> None:
        self.seeks: list[tuple[TP, int]] = []
        self.to_end: list[TP] = []

    def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def seek_to_end(self, *tps: TP) -> None:
        self.to_end.extend(tps)


ORDERS, CHANGELOG = TP("orders", 0), TP("app-totals-changelog", 0)
COMMITTED: dict[TP, int | None] = {ORDERS: None, TP("orders", 1): 0, TP("orders", 2): 7, CHANGELOG: None}


def rewind(reset: str) -> tuple[FakeAiokafka, list[Any]]:
    fake = FakeAiokafka()
    moved = asyncio.run(
        transport.rewind_uncommitted(fake, COMMITTED, reset, lambda tp: tp.topic.endswith("-changelog"))
    )
    return fake, moved


def test_a_faust_app_consumes_through_the_fixed_transport() -> None:
    app = faust.App(
        "unit-faust-app",
        broker=["kafka://127.0.0.1:1"],
        broker_consumer=[f"{transport.SCHEME}://127.0.0.1:1"],
        web_enabled=False,
        store="memory://",
    )
    assert app.conf.broker_consumer[0].scheme == transport.SCHEME
    assert isinstance(app.transport, transport.Transport)
    assert app.transport.Consumer is transport.Consumer
    # the faust internals the fixes override are still there
    assert callable(ThreadDelegateConsumer._getmany)
    assert callable(faust_aiokafka.AIOKafkaConsumerThread.call_thread)
    assert callable(faust_aiokafka.AIOKafkaConsumerThread._ensure_consumer)


def test_uncommitted_partitions_go_to_the_start_with_earliest() -> None:
    fake, moved = rewind("earliest")
    assert fake.seeks == [(ORDERS, 0), (TP("orders", 1), 0)]  # committed 7: seek_to_committed's job
    assert fake.to_end == []
    assert moved == [ORDERS, TP("orders", 1)]  # the changelog is left to table recovery


def test_uncommitted_partitions_go_to_the_end_with_latest_but_committed_zero_stays_zero() -> None:
    fake, moved = rewind("latest")
    assert fake.seeks == [(TP("orders", 1), 0)]
    assert fake.to_end == [ORDERS]
    assert sorted(moved) == [ORDERS, TP("orders", 1)]


def test_the_fetcher_gets_a_copy_of_the_active_partitions() -> None:
    live = {ORDERS, TP("orders", 1)}
    seen: list[Any] = []

    class Thread:
        async def getmany(self, active: Any, timeout: float) -> dict[TP, list[int]]:
            live.clear()  # what a rebalance does to faust's set while the fetch is queued
            seen.append(active)
            return {}

    consumer = object.__new__(transport.Consumer)  # a bare app: only _getmany is exercised
    consumer._thread = Thread()  # type: ignore[assignment]
    consumer.app = type("App", (), {})()
    asyncio.run(consumer._getmany(live, timeout=0.01))
    assert seen == [frozenset({ORDERS, TP("orders", 1)})]  # not emptied: aiokafka reads empty as "all"

    seen.clear()
    assert asyncio.run(consumer._getmany(set(), timeout=0.01)) == {}
    assert seen == []  # an empty set never reaches aiokafka


def test_a_fetch_refused_for_want_of_read_is_kept_for_the_worker_not_raised_into_faust() -> None:

    calls: list[Any] = []

    class Thread:
        async def getmany(self, active: Any, timeout: float) -> dict[TP, list[int]]:
            calls.append(active)
            raise TopicAuthorizationFailedError("orders")

    consumer = object.__new__(transport.Consumer)
    consumer._thread = Thread()  # type: ignore[assignment]
    consumer.app = app = type("App", (), {})()
    assert asyncio.run(consumer._getmany({ORDERS}, timeout=0.01)) == {}  # faust's fetcher goes on
    found = transport.refused(app)
    assert found is not None
    assert (found.resource_type, found.resource, found.operation) == ("topic", "orders", "READ")
    assert asyncio.run(consumer._getmany({ORDERS}, timeout=0.01)) == {}
    assert len(calls) == 1  # refused: no more fetches while the worker stops


def test_refused_reads_the_acl_errors_faust_never_collects_from_aiokafka() -> None:
    """The aiokafka internals :func:`transport.refused` reads exist (a real consumer, not started)
    and each refusal becomes a typed error naming the resource."""

    assert "self._pending_exception = None" in inspect.getsource(GroupCoordinator.__init__)

    async def check() -> None:
        real = AIOKafkaConsumer("orders", "customers", bootstrap_servers="127.0.0.1:1", group_id="g")
        app = type("App", (), {"_consumer": type("C", (), {"_thread": type("T", (), {"_consumer": real})})})()
        assert transport.refused(app) is None  # nothing refused (no coordinator before start)
        real._client.cluster.unauthorized_topics = {"orders", "elsewhere"}
        found = transport.refused(app)
        assert isinstance(found, AuthorizationError)
        assert (found.resource, found.operation) == ("orders", "DESCRIBE")  # subscribed, hidden
        real._coordinator = type("G", (), {"_pending_exception": GroupAuthorizationFailedError("g")})()
        group = transport.refused(app)
        assert isinstance(group, GroupAuthorizationError)
        assert group.resource == "g"
        assert "{group: g, operations: [read]}" in str(group)
        app.evstream_refused = found  # recorded by a refused fetch
        assert transport.refused(app) is found
        real._coordinator = None
        await real.stop()

    asyncio.run(check())
