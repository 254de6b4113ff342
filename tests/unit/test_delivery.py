"""DeliveryFuture and event ids: the pieces the publish hot path is made of."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from confluent_kafka import KafkaError

from evstream import DeliveryFailedError, DeliveryIndeterminateError
from evstream.producers import Delivery
from evstream.producers.delivery import DeliveryFuture, classify
from evstream.schemas.ids import new_event_id

DELIVERY = Delivery("orders", 2, 41, uuid.uuid4(), "OrderPlaced")


def test_result_waits_for_another_thread() -> None:
    future = DeliveryFuture(threading.Condition())
    assert not future.done()
    threading.Timer(0.05, future._resolve, (DELIVERY, None)).start()
    assert future.result(timeout=10) == DELIVERY
    assert future.done()
    assert future.exception() is None


def test_result_times_out_and_errors_raise() -> None:
    future = DeliveryFuture(threading.Condition())
    with pytest.raises(TimeoutError, match=r"no delivery report within 0\.01s"):
        future.result(timeout=0.01)
    future._resolve(None, DeliveryFailedError("orders: refused"))
    with pytest.raises(DeliveryFailedError, match="refused"):
        future.result()


def test_callbacks_run_once_before_and_after_resolution() -> None:
    future = DeliveryFuture(threading.Condition())
    seen: list[str] = []
    future.add_done_callback(lambda f: seen.append("early"))
    future._resolve(DELIVERY, None)
    future.add_done_callback(lambda f: seen.append("late"))
    assert seen == ["early", "late"]


def test_await_in_asyncio() -> None:
    async def scenario() -> tuple[Delivery, BaseException | None]:
        ok, bad = DeliveryFuture(threading.Condition()), DeliveryFuture(threading.Condition())
        threading.Timer(0.02, ok._resolve, (DELIVERY, None)).start()
        threading.Timer(0.02, bad._resolve, (None, DeliveryFailedError("nope"))).start()
        got = await ok
        try:
            await bad
        except DeliveryFailedError as exc:
            return got, exc
        return got, None

    got, error = asyncio.run(scenario())
    assert got == DELIVERY
    assert isinstance(error, DeliveryFailedError)


def test_event_ids_are_uuid7_and_strictly_increasing() -> None:
    ids = [new_event_id() for _ in range(20_000)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_event_ids_from_threads_are_unique() -> None:
    found: list[uuid.UUID] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [new_event_id() for _ in range(5000)]
        with lock:
            found.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(found)) == 20_000


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (KafkaError.MSG_SIZE_TOO_LARGE, DeliveryFailedError),
        (KafkaError._MSG_TIMED_OUT, DeliveryIndeterminateError),
    ],
)
def test_delivery_errors_carry_the_event_and_the_kafka_error(code: int, expected: type[Exception]) -> None:
    event_id = uuid.uuid4()
    error = classify(KafkaError(code), topic="orders", event_id=event_id)
    assert type(error) is expected
    assert isinstance(error, DeliveryFailedError | DeliveryIndeterminateError)
    assert (error.topic, error.event_id) == ("orders", event_id)
    assert error.kafka_error is not None
    assert error.kafka_error.code() == code
    restated = error.for_event("customers", uuid.UUID(int=7))
    assert type(restated) is expected
    assert (restated.topic, restated.event_id, restated.kafka_error) == (
        "customers",
        uuid.UUID(int=7),
        error.kafka_error,
    )
    assert str(restated).startswith(f"customers: event {uuid.UUID(int=7)}: ")
