"""`evstream worker module:handlers` runs a consumer group without the streams extra (faust)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
from confluent_kafka.admin import AdminClient, NewTopic

from evstream import KafkaSettings, RegistrySettings
from evstream.producers import EventProducer
from evstream.stack.processes import free_ports
from tests.conftest import Endpoints
from tests.consumer_helpers import declare_failure_topics
from tests.helpers import wait_until
from tests.integration.worker_handlers import TOPIC, ProbeHappened

BLOCK_FAUST = (
    "import sys; sys.modules['faust'] = None; sys.argv = ['evstream', *sys.argv[1:]];"
    " from evstream.cli import main; main()"
)


def test_a_handlers_worker_needs_no_faust(endpoints: Endpoints, tmp_path: Path, repo_root: Path) -> None:
    admin = AdminClient({"bootstrap.servers": endpoints.bootstrap_servers})
    if TOPIC not in admin.list_topics(timeout=10).topics:
        admin.create_topics([NewTopic(TOPIC, 3)])[TOPIC].result(timeout=30)
    group = f"g-worker-{uuid.uuid4().hex[:8]}"
    declare_failure_topics(endpoints, group, TOPIC)
    probes = [ProbeHappened(probe_id=f"p-{uuid.uuid4().hex[:6]}") for _ in range(5)]
    with EventProducer(
        kafka=KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers),
        registry=RegistrySettings(url=endpoints.registry_url),
    ) as producer:
        for future in producer.publish_many(probes):
            future.result(timeout=30)
    handled = tmp_path / "handled"
    port = free_ports(1)[0]
    env = {
        **os.environ,
        **endpoints.environment(),
        "EVSTREAM_TEST_HANDLED_FILE": str(handled),
        "EVSTREAM_CONSUMER_AUTO_OFFSET_RESET": "earliest",
    }
    args = ["worker", "tests.integration.worker_handlers:handlers", "--group", group, "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-c", BLOCK_FAUST, *args],
        env=env,
        cwd=repo_root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        mine = {p.probe_id for p in probes}

        def handled_all() -> bool:
            assert proc.poll() is None, proc.communicate(timeout=10)
            lines = handled.read_text().splitlines() if handled.exists() else []
            return mine <= {line.split()[0] for line in lines}

        wait_until(handled_all, timeout=90, what="the worker to handle the 5 probes")
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert (ready.status_code, ready.text) == (200, "ready\n")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "faust" not in err.lower(), err
