"""Hostile requests against a real `evstream gateway` process: cost per request, /healthz meanwhile.

    EVSTREAM_STACK_DIR=$PWD/.stack .venv/bin/python -m bench.gateway_abuse [--rounds 5]

For the 1 MiB amplification body of issue 13 (`{"lines": [{}, {}, ...]}`, single and batch) it
prints, per round, the answer's status, its size, the time to answer (upload included), the
slowest `/healthz` answer while it ran (a probe every 10 ms on another connection) and the
gateway's RSS before and after. Medians over the rounds are what to quote; the machine's load
shows in the spread.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from confluent_kafka.admin import AdminClient

from bench.producer import new_topic
from evstream.schemas.domain import CATALOG
from evstream.stack import LocalStack
from tests.gateway_helpers import Gateway, token
from tests.kafka_helpers import end_offsets

MIB = 1024 * 1024


def amplification_bodies() -> dict[str, bytes]:
    """The issue's request: a 1 MiB body of empty order lines, as one event and in a batch."""
    count = (MIB - 64) // 3
    single = b'{"lines": [' + b",".join([b"{}"] * count) + b"]}"
    batch = (
        b'{"events": [{"event_type": "OrderPlaced", "data": {"lines": ['
        + b",".join([b"{}"] * (count - 30))
        + b"]}}]}"
    )
    return {"/v1/events/OrderPlaced": single, "/v1/events:batch": batch}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_round(gw: Gateway, secret: str, path: str, body: bytes) -> tuple[int, int, float, float]:
    """(status, answer bytes, seconds to answer, slowest /healthz in seconds meanwhile)."""
    slowest = [0.0]
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                started = time.perf_counter()
                client.get(f"{gw.url}/healthz")
                slowest[0] = max(slowest[0], time.perf_counter() - started)
                stop.wait(0.01)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    with httpx.Client(timeout=60) as client:
        started = time.perf_counter()
        answer = client.post(f"{gw.url}{path}", content=body, headers=headers)
        took = time.perf_counter() - started
    stop.set()
    prober.join(timeout=15)
    return answer.status_code, len(answer.content), took, slowest[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    stack = LocalStack().state()
    topic = new_topic(AdminClient({"bootstrap.servers": stack.bootstrap_servers}))
    writer = token("abuse")
    with tempfile.TemporaryDirectory() as tmp:
        gw = Gateway(
            stack.bootstrap_servers,
            stack.registry_url or "",
            {m.event_type(): topic for m in CATALOG},
            [writer],
            Path(tmp) / "gateway.log",
            settings={"EVSTREAM_GATEWAY_MAX_BODY_BYTES": str(2 * MIB)},
        )
        gw.start()
        try:
            assert gw.process is not None
            before_offsets = sum(end_offsets(stack.bootstrap_servers, topic))
            idle = rss_mb(gw.process.pid)
            for path, body in amplification_bodies().items():
                rows = [one_round(gw, writer.secret, path, body) for _ in range(args.rounds)]
                statuses = sorted({r[0] for r in rows})
                took = [r[2] * 1000 for r in rows]
                health = [r[3] * 1000 for r in rows]
                print(
                    f"{path} ({len(body):,} B) x{args.rounds}: status {statuses}, answer "
                    f"{max(r[1] for r in rows):,} B max, time median {statistics.median(took):.0f} ms "
                    f"(max {max(took):.0f}), /healthz slowest median {statistics.median(health):.0f} ms "
                    f"(max {max(health):.0f})"
                )
            print(f"gateway RSS idle {idle:.0f} MB, after {rss_mb(gw.process.pid):.0f} MB")
            written = sum(end_offsets(stack.bootstrap_servers, topic)) - before_offsets
            print(f"records written by refused requests: {written}")
        finally:
            gw.stop()


if __name__ == "__main__":
    main()
