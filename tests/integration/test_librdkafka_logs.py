"""librdkafka's own log lines go through Python logging (issue 14, defect 5).

Before, `%3|...|FAIL|... Connect to ... failed` went straight to stderr from librdkafka and broke
the CLI's one-line error; now they are records of the ``evstream.librdkafka`` logger, shown by the
CLI at --log-level INFO/DEBUG only.
"""

from __future__ import annotations

import json
import socket
import subprocess

from tests.conftest import Endpoints
from tests.helpers import one_line_error, run_cli

DATA = {
    "order_id": "o-1",
    "payment_id": "p-1",
    "amount": {"amount_minor": 990, "currency": "GBP"},
    "method": "PAYPAL",
    "captured_at": "2026-11-27T10:00:00Z",
}


def dead_broker() -> str:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def publish(endpoints: Endpoints, *options: str) -> subprocess.CompletedProcess[str]:
    env = {
        "EVSTREAM_BOOTSTRAP_SERVERS": dead_broker(),
        "EVSTREAM_REGISTRY_URL": endpoints.registry_url,
        "EVSTREAM_PRODUCER_DELIVERY_TIMEOUT_MS": "4000",
        "EVSTREAM_PRODUCER_CLUSTER_DOWN_FAIL_S": "2",
    }
    proc = run_cli(
        "publish",
        "logs-topic",
        "--type",
        "PaymentCaptured",
        "--data",
        json.dumps(DATA),
        *options,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    return proc


def test_cli_error_stays_one_line_while_librdkafka_fails_to_connect(endpoints: Endpoints) -> None:
    proc = publish(endpoints)
    assert "%3|" not in proc.stderr, proc.stderr
    assert "FAIL" not in proc.stderr, proc.stderr
    one_line_error(proc)


def test_cli_shows_librdkafka_lines_at_info(endpoints: Endpoints) -> None:
    stderr = publish(endpoints, "--log-level", "INFO").stderr
    assert "evstream.librdkafka" in stderr, stderr
    assert "Connect to" in stderr, stderr
    assert "%3|" not in stderr
