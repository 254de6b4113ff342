"""evstream.streams.transport: the demo app consumes through it, the fetcher gets a copy of the active
partitions, and partitions without a committed offset are rewound after a rebalance."""

from __future__ import annotations

import asyncio
from typing import Any

from faust.transport.consumer import ThreadDelegateConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from evstream.settings import KafkaSettings, RegistrySettings
from evstream.streams import transport
from evstream.streams.demo import create_app


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


def test_the_demo_app_consumes_through_the_fixed_transport() -> None:
    app = create_app(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"), registry=RegistrySettings()).faust
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

    consumer = object.__new__(transport.Consumer)  # no app: only _getmany is exercised
    consumer._thread = Thread()  # type: ignore[assignment]
    asyncio.run(consumer._getmany(live, timeout=0.01))
    assert seen == [frozenset({ORDERS, TP("orders", 1)})]  # not emptied: aiokafka reads empty as "all"

    seen.clear()
    assert asyncio.run(consumer._getmany(set(), timeout=0.01)) == {}
    assert seen == []  # an empty set never reaches aiokafka
