"""The gateway's OpenAPI document against what it serves: schemathesis, every conformance check.

A real `evstream gateway` process on fresh topics. Schemathesis (its CLI: its pytest plugin does
not run under pytest 9) generates requests from the served `/openapi.json` (valid and invalid
ones, a bounded number per operation), sends them with a token, and checks each answer against
the document: status, media type, headers, body schema, valid data accepted, invalid data
refused, auth enforced, unsupported methods. Then every record on the topics must be one that a
2xx acknowledged: nothing refused was written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from tests.conftest import Endpoints
from tests.gateway_helpers import Gateway, gateway_topics, token, topic_map
from tests.helpers import wait_until
from tests.kafka_helpers import end_offsets

WRITER = token("contract")
MAX_EXAMPLES = 20  # per operation and phase: ~2k requests, ~15 s
SEED = 13


@pytest.fixture(scope="module")
def topics(endpoints: Endpoints) -> Iterator[dict[str, str]]:
    with gateway_topics(endpoints.bootstrap_servers, "t-gwc") as names:
        yield names


@pytest.fixture(scope="module")
def gateway(
    endpoints: Endpoints, topics: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    gw = Gateway(
        endpoints.bootstrap_servers,
        endpoints.registry_url,
        topic_map(topics["orders"], topics["customers"], topics["tiers"]),
        [WRITER],
        tmp_path_factory.mktemp("gateway-contract") / "gateway.log",
        settings={"EVSTREAM_GATEWAY_RATE_LIMIT": "100000/second"},
    ).start()
    try:
        yield gw
    finally:
        gw.stop()


def run_schemathesis(gateway: Gateway, har: Path) -> subprocess.CompletedProcess[str]:
    """``st run`` against the served document: every check, valid and invalid data, a bounded
    number of examples per operation, a fixed seed (reproducible in CI), every exchange in ``har``."""
    st = Path(sys.executable).with_name("st")
    return subprocess.run(
        [
            str(st),
            "run",
            f"{gateway.url}/openapi.json",
            "--checks=all",
            "--mode=all",
            f"--max-examples={MAX_EXAMPLES}",
            f"--seed={SEED}",
            "--generation-database=none",
            "--continue-on-failure",
            "--no-color",
            "--request-timeout=30",
            f"--header=Authorization: Bearer {WRITER.secret}",
            "--report=har",
            f"--report-har-path={har}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=har.parent,  # its cache directory goes there
        # valid data with integer literals, as the document describes them (see the hooks module)
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.gateway_schemathesis_hooks",
            "PYTHONPATH": os.pathsep.join(
                [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
            ),
        },
    )


def answers(har: Path) -> list[tuple[int, Any]]:
    """(status, JSON body or None) of every exchange recorded in ``har``."""
    found: list[tuple[int, Any]] = []
    for entry in json.loads(har.read_text())["log"]["entries"]:
        response = entry["response"]
        try:
            body = json.loads(response.get("content", {}).get("text") or "null")
        except ValueError:
            body = None
        found.append((int(response["status"]), body))
    return found


def every_record(bootstrap: str, topics: list[str]) -> list[Message]:
    """Every record up to the end offsets, aborted transactions' included (read_uncommitted)."""
    ends = {(t, p): end for t in topics for p, end in enumerate(end_offsets(bootstrap, t))}
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"probe-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
        }
    )
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for (t, p), end in ends.items() if end])
    got: list[Message] = []

    def drained() -> bool:
        got.extend(m for m in consumer.consume(1000, timeout=0.5) if m.error() is None)
        positions = consumer.position([TopicPartition(t, p) for (t, p), end in ends.items() if end])
        return all(tp.offset >= ends[(tp.topic, tp.partition)] for tp in positions)

    try:
        wait_until(drained, timeout=60, what="every record of the contract topics")
    finally:
        consumer.close()
    return got


def test_the_served_document_matches_every_answer_and_refusals_write_nothing(
    endpoints: Endpoints, gateway: Gateway, topics: dict[str, str], tmp_path: Path
) -> None:
    har = tmp_path / "schemathesis.har"
    run = run_schemathesis(gateway, har)
    summary = run.stdout[-6000:]
    assert run.returncode == 0, summary
    assert "No issues found" in run.stdout, summary
    exchanges = answers(har)
    assert len(exchanges) > 500, summary  # the coverage and fuzzing phases ran
    acknowledged: list[str] = []
    for status, body in exchanges:
        if 200 <= status < 300 and isinstance(body, dict) and "openapi" not in body:
            acknowledged += [r["event_id"] for r in body.get("results", [body]) if "event_id" in r]
    refused = sum(1 for status, _ in exchanges if status >= 400)
    assert refused > len(exchanges) // 4, summary  # invalid requests were sent, and refused
    records = every_record(endpoints.bootstrap_servers, list(topics.values()))
    written = [_text(dict(m.headers() or [])["ce_id"]) for m in records]
    # every record (aborted transactions' included) is one a 2xx acknowledged, each once
    # (a replayed 201 repeats an event id: the set of acknowledged ids is what was written)
    assert sorted(written) == sorted(set(acknowledged))


def _text(value: str | bytes | None) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
