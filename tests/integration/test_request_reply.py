"""Request-reply over the real broker: round trips, the timeout path, late replies counted."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import pytest
from pydantic import Field

from evstream import DeadLetter, KafkaSettings, RegistrySettings, RequestTimeoutError, TopicsAdminError
from evstream.consumers import ConsumerRunner, Handlers, MessageContext, Requester, reply_with
from evstream.consumers.failures import header_pairs
from evstream.producers import EventProducer
from evstream.schemas.events import Event
from tests.conftest import Endpoints, TopicFactory
from tests.consumer_helpers import runner
from tests.helpers import wait_until
from tests.kafka_helpers import read_records


class PriceQuoteRequested(Event):
    """Test request: what would ``quantity`` of ``sku`` cost?"""

    topic: ClassVar[str] = "quotes"
    aggregate_field: ClassVar[str] = "sku"
    sku: str = Field(min_length=1)
    quantity: int = Field(ge=1)

    class Meta:
        namespace = "evstream.tests"


class PriceQuoted(Event):
    """Test reply."""

    topic: ClassVar[str] = "quotes.replies"
    aggregate_field: ClassVar[str] = "sku"
    sku: str
    total_minor: int

    class Meta:
        namespace = "evstream.tests"


UNIT_PRICE = 250


@pytest.fixture
def producer(endpoints: Endpoints) -> Iterator[EventProducer]:
    with EventProducer(
        kafka=KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers),
        registry=RegistrySettings(url=endpoints.registry_url),
    ) as started:
        yield started


def requester(endpoints: Endpoints, producer: EventProducer, reply_topic: str) -> Requester:
    return Requester(
        producer,
        reply_topic,
        kafka=KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers),
        registry=RegistrySettings(url=endpoints.registry_url),
    )


def responder(
    endpoints: Endpoints, producer: EventProducer, topic: str, hold: threading.Event | None = None
) -> ConsumerRunner:
    handlers = Handlers()

    @handlers.on(PriceQuoteRequested)
    @reply_with(producer)
    def quote(request: PriceQuoteRequested, ctx: MessageContext) -> PriceQuoted:
        if request.sku == "SLOW" and hold is not None:
            hold.wait(30)  # the test releases it after the requester gave up
        return PriceQuoted(sku=request.sku, total_minor=request.quantity * UNIT_PRICE)

    return runner(endpoints, f"quotes-{uuid.uuid4().hex[:6]}", handlers, topic)


def test_concurrent_requests_each_get_their_own_reply(
    endpoints: Endpoints, new_topic: TopicFactory, producer: EventProducer
) -> None:
    requests, replies = new_topic(partitions=3), new_topic(partitions=2)
    service = responder(endpoints, producer, requests)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        with requester(endpoints, producer, replies) as client:

            def ask(n: int) -> PriceQuoted:
                return client.request(
                    PriceQuoteRequested(sku=f"SKU-{n}", quantity=n), PriceQuoted, topic=requests, timeout=30
                )

            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(ask, range(1, 41)))
            async_answer = asyncio.run(
                client.arequest(
                    PriceQuoteRequested(sku="A", quantity=3), PriceQuoted, topic=requests, timeout=30
                )
            )
    finally:
        service.stop()
        thread.join(30)
    assert [(a.sku, a.total_minor) for a in answers] == [(f"SKU-{n}", n * UNIT_PRICE) for n in range(1, 41)]
    assert (async_answer.sku, async_answer.total_minor) == ("A", 3 * UNIT_PRICE)
    assert service.stats.handled == 41


def test_timeout_is_typed_and_a_late_reply_is_discarded_and_counted(
    endpoints: Endpoints, new_topic: TopicFactory, producer: EventProducer
) -> None:
    requests, replies = new_topic(partitions=1), new_topic(partitions=1)
    hold = threading.Event()
    service = responder(endpoints, producer, requests, hold)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        with requester(endpoints, producer, replies) as client:
            with pytest.raises(
                RequestTimeoutError, match=r"no reply to PriceQuoteRequested .* within 1s"
            ) as err:
                client.request(
                    PriceQuoteRequested(sku="SLOW", quantity=1), PriceQuoted, topic=requests, timeout=1
                )
            hold.set()  # now the responder answers, too late
            wait_until(lambda: client.late_replies == 1, timeout=30, what="the late reply counted")
            # A caller may cancel its future: the reply to it is dropped and the reader lives on.
            _, cancelled = client.send(
                PriceQuoteRequested(sku="GONE", quantity=1), PriceQuoted, topic=requests
            )
            assert cancelled.cancel()
            # The requester still works (its replies come after GONE's on the one reply partition),
            # and the late reply was not handed to this later request.
            fast = client.request(PriceQuoteRequested(sku="FAST", quantity=2), PriceQuoted, topic=requests)
    finally:
        service.stop()
        thread.join(30)
    assert (fast.sku, fast.total_minor) == ("FAST", 2 * UNIT_PRICE)
    (late,) = [
        m for m in read_records(endpoints.bootstrap_servers, [replies], 2) if b"SLOW" in (m.key() or b"")
    ]
    assert dict(header_pairs(late))["ce_causationid"].decode() == err.value.request_id


def test_missing_reply_topic_and_request_without_reply_to(
    endpoints: Endpoints, new_topic: TopicFactory, producer: EventProducer
) -> None:
    with pytest.raises(TopicsAdminError, match="reply topic 'no-such-replies-"):
        requester(endpoints, producer, f"no-such-replies-{uuid.uuid4().hex[:6]}").start()
    requests = new_topic(partitions=1)
    dlq = new_topic(partitions=1, name=f"{requests}.dlq")
    producer.publish(PriceQuoteRequested(sku="X", quantity=1), topic=requests).result(timeout=30)
    service = responder(endpoints, producer, requests)
    stats = service.run(until_idle_s=2)
    assert (stats.handled, stats.dead_lettered) == (0, 1)
    (dead,) = read_records(endpoints.bootstrap_servers, [dlq], 1)
    assert dict(header_pairs(dead))["evstream.dlq.error-type"] == DeadLetter.__name__.encode()
