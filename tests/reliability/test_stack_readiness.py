"""`stack up` after a SIGKILLed node returns only once that node answers on its own listener.

Right after a SIGKILL the controller still lists the dead broker as alive (until its session times
out), so a metadata call through any survivor sees "every broker" while the restarted node does not
listen yet. `up` must not be fooled by that: when it returns, a client bootstrapped to the
restarted node alone gets metadata and produces on the first try, within a short timeout.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from evstream.stack import LocalStack
from tests.reliability.faults import kill

pytestmark = [pytest.mark.reliability, pytest.mark.long, pytest.mark.slow]  # a 3-node stack: make reliability

FIRST_TRY_S = 5.0  # one attempt each, no retry loop: `up` must already have waited


def test_up_after_a_sigkilled_node_returns_once_that_node_answers_on_its_own_listener(
    trio: LocalStack, figures: dict[str, object]
) -> None:
    trio.up()  # whatever an earlier scenario left dead
    before = trio.state()
    node3 = before.node(3)
    assert node3.pid is not None

    kill(node3.pid)
    started = time.monotonic()
    trio.up()  # restarts only kafka-3
    up_s = time.monotonic() - started
    figures["up_after_kill_s"] = round(up_s, 2)

    after = trio.state()
    assert after.node(3).pid not in (None, node3.pid)
    assert [after.node(n).pid for n in (1, 2)] == [before.node(n).pid for n in (1, 2)]
    assert trio.notices == ["kafka-3 was not running: started it with its data"]

    # Bound to node 3 alone: it succeeds only if node 3 answers (the client knows no other address
    # until node 3 has), and it lists every node. librdkafka may send this very call to a broker it
    # has just learnt of, so orig_broker_id is not asserted.
    only3: dict[str, str | int | float | bool] = {
        "bootstrap.servers": node3.bootstrap,
        "socket.connection.setup.timeout.ms": 2000,
    }
    admin = AdminClient(only3)
    meta = admin.list_topics(timeout=FIRST_TRY_S)
    assert {b: meta.brokers[b].port for b in meta.brokers} == {n.node_id: n.port for n in after.nodes}

    # A partition node 3 leads: produced to through node 3 alone, acks=all, on the first flush.
    topic = f"ready-{uuid.uuid4().hex[:8]}"
    created = admin.create_topics(
        [NewTopic(topic, 1, replica_assignment=[[3, 1, 2]], config={"min.insync.replicas": "2"})],
        request_timeout=FIRST_TRY_S,
    )
    created[topic].result(timeout=FIRST_TRY_S)
    acked: list[Message] = []
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        (errors.append(err) if err is not None else acked.append(msg))

    producer = Producer(only3 | {"acks": "all", "enable.idempotence": True})
    producer.produce(topic, key=b"k", value=b"ready", partition=0, on_delivery=on_delivery)
    assert producer.flush(FIRST_TRY_S) == 0
    first_produce_s = time.monotonic() - started - up_s
    figures["node3_produce_after_up_s"] = round(first_produce_s, 2)
    assert errors == []
    assert [(m.topic(), m.partition()) for m in acked] == [(topic, 0)]
    leader = admin.list_topics(topic, timeout=FIRST_TRY_S).topics[topic].partitions[0].leader
    assert leader == 3
