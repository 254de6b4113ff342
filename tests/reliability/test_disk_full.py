"""The broker's data dir on a small tmpfs fills up under a steady publish (issue 14).

A private one-node stack lives on a 128 MB tmpfs mounted for this test (root only: skipped, with
the reason, where mounting is not allowed); a filler file leaves ~24 MB free, then an EventProducer
publishes ~2 KB records until the disk is full. Kafka takes its only log dir offline and stops;
the producer says so (ClusterUnavailableError after ``cluster_down_fail_s``, queued events failed,
never silently accepted). After the filler is removed and the node restarted, every acknowledged
event is read back, no failed one is present, no indeterminate one twice. Marked `long`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from evstream import (
    ClusterUnavailableError,
    DeliveryFailedError,
    DeliveryIndeterminateError,
    KafkaSettings,
    RegistrySettings,
    StackNotRunningError,
)
from evstream.producers import DeliveryFuture, EventProducer, ProducerSettings
from evstream.schemas import Envelope
from evstream.stack import LocalStack
from tests.conftest import Endpoints
from tests.factories import mixed_events
from tests.kafka_helpers import end_offsets, read_records

pytestmark = [pytest.mark.long, pytest.mark.slow, pytest.mark.reliability]

SIZE_MB = 128
FREE_MB = 24
PAD = 2048  # random bytes per record (incompressible, even by batch compression): ~2 KB on disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "tmpfs"
    where.mkdir()
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if mount is None or umount is None:
        pytest.skip("no mount/umount here")
    mounted = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield where
    finally:
        subprocess.run([umount, "-l", str(where)], check=False)


def fill(disk: Path, leave_mb: int) -> Path:
    """A file taking all but ``leave_mb`` of ``disk``."""
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize
    filler = disk / "filler"
    chunk = b"\0" * (1 << 20)
    with filler.open("wb") as out:
        for _ in range(max(0, free - leave_mb * (1 << 20)) >> 20):
            out.write(chunk)
    return filler


def node_alive(stack: LocalStack) -> bool:
    try:
        pid = stack.state().node(1).pid
    except StackNotRunningError:  # every process of the stack is gone
        return False
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_full_data_disk_stops_the_broker_the_producer_is_told_and_nothing_acked_is_lost(
    small_disk: Path, endpoints: Endpoints, figures: dict[str, object]
) -> None:
    stack = LocalStack(small_disk / "stack", start_timeout=180, stop_timeout=10)
    stack.up(nodes=1, registry=False)  # schemas go to the session's registry
    try:
        bootstrap = stack.state().bootstrap_servers
        topic = f"disk-full-{uuid.uuid4().hex[:6]}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, 3)])[topic].result(30)
        end_offsets(bootstrap, topic)
        filler = fill(small_disk, FREE_MB)
        futures: list[tuple[uuid.UUID, DeliveryFuture]] = []
        refused = 0
        events = mixed_events(600, seed=5)
        started = time.monotonic()
        settings = ProducerSettings(cluster_down_fail_s=3.0, delivery_timeout_ms=30_000)
        with EventProducer(
            kafka=KafkaSettings(bootstrap_servers=bootstrap),
            registry=RegistrySettings(url=endpoints.registry_url),
            settings=settings,
        ) as producer:
            i = 0
            while time.monotonic() - started < 120:
                event_id = uuid.uuid4()
                try:
                    future = producer.publish(
                        events[i % len(events)],
                        topic=topic,
                        event_id=event_id,
                        extra_headers=[("pad", os.urandom(PAD))],
                    )
                except ClusterUnavailableError:
                    refused += 1
                    if refused >= 100:
                        break  # told, at once, 100 times over: enough
                    continue
                futures.append((event_id, future))
                i += 1
                if i % 200 == 0:
                    producer.flush(0.05)  # pacing and report serving, not a synchronisation
            told_after = time.monotonic() - started
            broker_stopped = not node_alive(stack)
            producer.flush(60)
        outcome: dict[uuid.UUID, str] = {}
        kinds: Counter[str] = Counter()
        for event_id, future in futures:
            error = future.exception(timeout=60)
            outcome[event_id] = (
                "acked"
                if error is None
                else "indeterminate"
                if isinstance(error, DeliveryIndeterminateError)
                else "failed"
            )
            if error is not None:
                assert isinstance(error, DeliveryFailedError | DeliveryIndeterminateError), error
                kinds[type(error).__name__] += 1
        filler.unlink()
        stack.up()  # the node again, on a disk with room
        written = sum(end_offsets(bootstrap, topic))
        rows = read_records(bootstrap, [topic], written)
        read = Counter(Envelope.from_headers(m.headers() or []).event_id for m in rows)
        acked = [e for e, o in outcome.items() if o == "acked"]
        lost = [e for e in acked if read[e] == 0]
        failed_present = [e for e, o in outcome.items() if o == "failed" and read[e]]
        twice = [e for e, n in read.items() if n > 1]
        figures.update(
            {
                "published": len(futures),
                "acked": len(acked),
                "refused_at_publish": refused,
                "future_errors": dict(kinds),
                "told_after_s": round(told_after, 1),
                "broker_stopped": broker_stopped,
                "read_after_restart": len(rows),
                "lost": len(lost),
                "failed_present": len(failed_present),
                "read_twice": len(twice),
            }
        )
        assert len(acked) > 5000, figures  # the disk filled after real progress
        assert refused >= 100, figures  # the producer was told, not left accepting events
        assert broker_stopped, figures
        assert (len(lost), len(failed_present), len(twice)) == (0, 0, 0), figures
    finally:
        stack.down(purge=True)
