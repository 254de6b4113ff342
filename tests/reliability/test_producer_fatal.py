"""A fatal error of the transactional producer (issue 14, defect 3).

librdkafka's fatal INVALID_TXN_STATE at abort is an upstream bug we cannot trigger on purpose, and
confluent-kafka exposes no rd_kafka_test_fatal_error. The fatal error used here is real: a second
producer initialising transactions with the same transactional.id fences the first, whose next
transaction fails with librdkafka's fatal _FENCED. Before, every later transaction of the fenced
EventProducer failed with a generic PublishError and nothing said it was fatal; now it is a
ProducerFatalError with the cause, the block's futures fail (aborted: not visible), `healthy` is
False, and (where allowed: recover_fenced here) the instance is replaced so the next transaction
commits.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from confluent_kafka import KafkaError, Producer

from evstream import DeliveryFailedError, KafkaSettings, ProducerFatalError, RegistrySettings
from evstream.ops import OpsServer
from evstream.producers import DeliveryFuture, EventProducer, ProducerSettings
from evstream.schemas import Envelope
from tests.conftest import Endpoints
from tests.factories import mixed_events
from tests.kafka_helpers import end_offsets, read_records


def fence(endpoints: Endpoints, transactional_id: str) -> None:
    """Another instance takes the transactional id over (it bumps the epoch), then goes away."""
    other = Producer({"bootstrap.servers": endpoints.bootstrap_servers, "transactional.id": transactional_id})
    other.init_transactions(30)
    other.flush(5)


def fenced_transaction(
    producer: EventProducer, topic: str, count: int
) -> tuple[ProducerFatalError, list[DeliveryFuture]]:
    futures: list[DeliveryFuture] = []
    with pytest.raises(ProducerFatalError) as caught, producer.transaction():
        futures.extend(producer.publish(e, topic=topic) for e in mixed_events(count, seed=3))
    return caught.value, futures


def assert_worker_not_ready(transactional_id: str) -> None:
    """A worker's /readyz (any component, here one that is otherwise ready) names the fatal producer."""
    ops = OpsServer("127.0.0.1", 0, lambda: None)
    port = ops.start()
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
    finally:
        ops.stop()
    assert response.status_code == 503
    assert f"producer {transactional_id}: the transactional producer hit a fatal error" in response.text
    assert "_FENCED" in response.text


@pytest.mark.parametrize("recover", [False, True], ids=["unrecovered", "recovered"])
def test_a_fenced_transactional_producer_reports_a_fatal_error_and_recovers_where_allowed(
    endpoints: Endpoints, topic: str, recover: bool, figures: dict[str, object]
) -> None:
    tid = f"fatal-{uuid.uuid4().hex[:8]}"
    settings = ProducerSettings(transactional_id=tid, recover_fenced=recover)
    with EventProducer(
        kafka=KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers),
        registry=RegistrySettings(url=endpoints.registry_url),
        settings=settings,
    ) as producer:
        with producer.transaction():
            committed = [producer.publish(e, topic=topic) for e in mixed_events(10, seed=1)]
        assert all(f.result(timeout=30) for f in committed)
        fence(endpoints, tid)
        error, futures = fenced_transaction(producer, topic, 10)
        assert error.kafka_error is not None
        assert error.kafka_error.code() == KafkaError._FENCED
        assert error.recovered is recover
        for future in futures:  # fencing aborted the open transaction: not written
            assert isinstance(future.exception(timeout=30), DeliveryFailedError)
        if recover:
            assert producer.healthy
            with producer.transaction():
                after = [producer.publish(e, topic=topic) for e in mixed_events(10, seed=2)]
            assert all(f.result(timeout=30) for f in after)
            assert producer.recoveries == 1
        else:
            assert not producer.healthy
            assert producer.fatal_error is error
            assert_worker_not_ready(tid)
            with pytest.raises(ProducerFatalError), producer.transaction():  # typed, every time
                pass
            after = []
    visible = read_records(
        endpoints.bootstrap_servers, [topic], 10 + len(after), **{"isolation.level": "read_committed"}
    )
    ids = {Envelope.from_headers(m.headers() or []).event_id for m in visible}
    assert ids == {f.result().event_id for f in committed + after}  # the fenced batch is invisible
    assert sum(end_offsets(endpoints.bootstrap_servers, topic)) >= len(ids)
    figures.update({"fatal": error.kafka_error.name(), "recovered": error.recovered, "visible": len(ids)})
