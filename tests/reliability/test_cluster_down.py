"""The only broker down (SIGKILL; issue 14, defect 4): publishes fail fast, nothing acknowledged lost.

Before, publish() kept accepting events for 25 s (55,624 of them) that all resolved as
indeterminate only at the 120 s delivery timeout, and `evstream publish` took 120 s to exit.
Now, once no broker has answered for cluster_down_fail_s, publish() raises ClusterUnavailableError
at once, events queued after the outage began are failed (never sent), those queued before it are
indeterminate (they may have been sent), and every future resolves within seconds.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path

import pytest

from evstream import ClusterUnavailableError, DeliveryIndeterminateError, KafkaSettings
from evstream.producers import DeliveryFuture, EventProducer, ProducerSettings
from tests.conftest import Endpoints
from tests.factories import mixed_events
from tests.helpers import one_line_error, run_cli, wait_until
from tests.kafka_helpers import read_records
from tests.reliability.faults import Private, kill
from tests.reliability.test_registry_faults import registry


def outcome(future: DeliveryFuture) -> str:
    error = future.exception(timeout=0)
    if error is None:
        return "acked"
    if isinstance(error, ClusterUnavailableError):
        return "unavailable"
    return "indeterminate" if isinstance(error, DeliveryIndeterminateError) else "failed"


def test_publish_fails_fast_while_the_only_broker_is_down_and_recovers(
    solo: Private, figures: dict[str, object]
) -> None:
    topic = solo.topic("down", partitions=3)
    events = mixed_events(50_000, seed=5)
    settings = ProducerSettings(cluster_down_fail_s=3.0, linger_ms=5)
    futures: dict[uuid.UUID, DeliveryFuture] = {}
    refused = 0
    kafka = KafkaSettings(bootstrap_servers=solo.endpoints.bootstrap_servers)
    try:
        with EventProducer(kafka=kafka, registry=registry(solo), settings=settings) as producer:
            for event in events[:1000]:
                future = producer.publish(event, topic=topic, event_id=(eid := uuid.uuid4()))
                futures[eid] = future
            assert producer.flush(30) == 0
            kill(solo.node_pid(1), signal.SIGKILL)
            killed = time.monotonic()
            for event in events[1000:]:  # keep publishing, as a service would
                try:
                    futures[eid] = producer.publish(event, topic=topic, event_id=(eid := uuid.uuid4()))
                except ClusterUnavailableError:
                    refused += 1
                    break
                time.sleep(0.0005)  # a steady stream of work, not a synchronisation
            refused_after = time.monotonic() - killed
            assert refused == 1, "publish() never refused while the broker was down"
            assert refused_after < settings.cluster_down_fail_s + 10, refused_after
            assert not producer.healthy
            wait_until(
                lambda: all(f.done() for f in futures.values()), timeout=30, what="every future resolved"
            )
            resolved_after = time.monotonic() - killed
            solo.restart_dead()
            wait_until(lambda: producer.healthy, timeout=60, what="the producer healthy again")
            producer.publish(events[-1], topic=topic).result(timeout=60)
    finally:
        solo.restart_dead()
    outcomes = {eid: outcome(f) for eid, f in futures.items()}
    counts = {kind: sum(1 for o in outcomes.values() if o == kind) for kind in sorted(set(outcomes.values()))}
    acked = {eid for eid, o in outcomes.items() if o == "acked"}
    read = read_records(solo.endpoints.bootstrap_servers, [topic], len(acked) + 1)
    from evstream.schemas import Envelope  # noqa: PLC0415

    ids = [Envelope.from_headers(m.headers() or []).event_id for m in read]
    assert acked <= set(ids), "an acknowledged event is missing"
    unavailable = {eid for eid, o in outcomes.items() if o == "unavailable"}
    assert not unavailable & set(ids), "an event reported as not written was written"
    assert len(ids) == len(set(ids))
    figures.update(
        {
            **counts,
            "refused_after_s": round(refused_after, 1),
            "all_resolved_after_s": round(resolved_after, 1),
        }
    )
    assert resolved_after < 30  # not the 120 s delivery timeout


@pytest.mark.long  # make reliability; make test keeps the library scenario above
def test_cli_publish_exits_within_the_fail_time_when_the_broker_is_down(
    solo: Private, endpoints: Endpoints, tmp_path: Path
) -> None:
    """The private broker is killed; the registry is the session's (the private one keeps its
    schemas in that broker: with it down, registering is rightly RegistryUnavailableError)."""
    topic = solo.topic("down-cli")
    events = mixed_events(500)
    path = tmp_path / "events.jsonl"
    path.write_text(
        "\n".join(json.dumps({"type": type(e).__name__, "data": e.model_dump(mode="json")}) for e in events)
    )
    env = {
        "EVSTREAM_BOOTSTRAP_SERVERS": solo.endpoints.bootstrap_servers,
        "EVSTREAM_REGISTRY_URL": endpoints.registry_url,
        "EVSTREAM_PRODUCER_CLUSTER_DOWN_FAIL_S": "3",
    }
    try:
        kill(solo.node_pid(1), signal.SIGKILL)
        started = time.monotonic()
        proc = run_cli("publish", topic, "--file", str(path), env=env, timeout=120)
        took = time.monotonic() - started
    finally:
        solo.restart_dead()
    assert proc.returncode == 1, proc.stderr
    line = one_line_error(proc)
    assert "no Kafka broker reachable" in line, line
    assert took < 30, f"took {took:.0f}s (the delivery timeout is 120 s)"
