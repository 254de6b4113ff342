"""HTTP gateway: single-event requests/s, latency at fixed rates, batch events/s (vegeta load).

A real `evstream gateway` process (uvicorn + uvloop + httptools) on the local stack publishes
OrderPlaced events (~400 B JSON) to a fresh 6-partition topic; vegeta (Go, built into bench/.bin
on first use) sends the requests. Every 201 is counted against the topic's end offsets. For
context, raw confluent-kafka produces the same Avro payloads on the same broker in the same run.
The gateway's CPU time per request (its process and workers, from /proc) is printed beside the
latencies: on a shared machine it varies less than requests/s. Run (local stack up, Go on PATH):

    .venv/bin/python -m bench.gateway [--duration 15] [--rates 1000,2000,3000] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from bench.producer import new_topic
from evstream.schemas.domain import CATALOG, OrderPlaced
from evstream.stack import LocalStack
from tests.factories import mixed_events
from tests.gateway_helpers import Gateway, token
from tests.kafka_helpers import end_offsets

VEGETA = Path(__file__).parent / ".bin" / "vegeta"
VEGETA_VERSION = "v12.13.0"


def vegeta() -> str:
    if not VEGETA.exists():
        go = shutil.which("go") or "/usr/local/go/bin/go"
        env = {**os.environ, "GOBIN": str(VEGETA.parent)}
        subprocess.run(
            [go, "install", f"github.com/tsenart/vegeta/v12@{VEGETA_VERSION}"], check=True, env=env
        )
    return str(VEGETA)


def bodies(count: int) -> list[bytes]:
    placed = [e for e in mixed_events(count * 6, seed=99) if isinstance(e, OrderPlaced)]
    return [json.dumps(e.model_dump(mode="json")).encode() for e in placed[:count]]


def targets(path: Path, url: str, secret: str, payloads: list[bytes]) -> Path:
    header = {"Content-Type": ["application/json"], "Authorization": [f"Bearer {secret}"]}
    with path.open("w") as out:
        for body in payloads:
            target = {"method": "POST", "url": url, "body": base64.b64encode(body).decode(), "header": header}
            out.write(json.dumps(target) + "\n")
    return path


def attack(target_file: Path, *, rate: int, duration: float, workers: int = 0) -> dict[str, Any]:
    """One vegeta attack; rate 0 means as fast as ``workers`` connections allow."""
    cmd = [
        vegeta(),
        "attack",
        "-format=json",
        f"-targets={target_file}",
        f"-duration={duration}s",
        "-timeout=15s",
    ]
    cmd += [f"-rate={rate}/s"] if rate else ["-rate=0", f"-max-workers={workers}"]
    results = subprocess.run(cmd, check=True, capture_output=True).stdout
    report = subprocess.run(
        [vegeta(), "report", "-type=json"], input=results, check=True, capture_output=True
    )
    data: dict[str, Any] = json.loads(report.stdout)
    return data


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its descendants (the uvicorn workers), from /proc."""
    total = 0.0
    pending = [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total


def summary(label: str, report: dict[str, Any], events_per_request: int = 1, cpu_s: float = 0.0) -> str:
    lat = report["latencies"]
    codes = report["status_codes"]
    ok = int(codes.get("201", 0))
    per_request = cpu_s / max(1, int(report["requests"])) * 1e6
    return (
        f"{label:<28} sent {report['requests']:>7,}  201: {ok:>7,}  other: "
        f"{ {k: v for k, v in codes.items() if k != '201'} }  "
        f"throughput {report['throughput'] * events_per_request:>9,.0f} ev/s  "
        f"p50 {lat['50th'] / 1e6:6.1f} ms  p99 {lat['99th'] / 1e6:6.1f} ms  max {lat['max'] / 1e6:7.1f} ms  "
        f"gateway CPU {per_request:6.0f} us/request"
    )


def raw_produce(bootstrap: str, topic: str, payloads: list[bytes], count: int) -> float:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5}
    )
    started = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, payloads[i % len(payloads)], key=str(i).encode())
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    assert producer.flush(60) == 0
    return count / (time.perf_counter() - started)


def run(args: argparse.Namespace, workers: int, tmp: Path) -> None:
    stack = LocalStack().state()
    bootstrap, registry_url = stack.bootstrap_servers, stack.registry_url or ""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = new_topic(admin)
    writer = token("bench", rate_limit="1000000/second")
    gw = Gateway(
        bootstrap,
        registry_url,
        {m.event_type(): topic for m in CATALOG},  # readiness needs only this fresh topic
        [writer],
        tmp / f"gateway-{workers}.log",
        settings={"EVSTREAM_GATEWAY_MAX_BODY_BYTES": str(8 * 1024 * 1024)},
    )
    gw.extra_args = ["--workers", str(workers)]
    gw.start()
    payloads = bodies(2000)
    single = targets(tmp / "single.jsonl", f"{gw.url}/v1/events/OrderPlaced", writer.secret, payloads)
    batch_bodies = [
        json.dumps(
            {
                "events": [
                    {"event_type": "OrderPlaced", "data": json.loads(p)} for p in payloads[i : i + args.batch]
                ]
            }
        ).encode()
        for i in range(0, len(payloads), args.batch)
    ]
    batch = targets(tmp / "batch.jsonl", f"{gw.url}/v1/events:batch", writer.secret, batch_bodies)
    try:
        before = sum(end_offsets(bootstrap, topic))
        warm = attack(single, rate=500, duration=3)  # warm up: connections, schema ids, caches
        print(f"--- gateway with {workers} worker process(es); {args.duration:.0f} s per step")
        accepted = int(warm["status_codes"].get("201", 0))
        assert gw.process is not None
        steps: list[tuple[str, Path, dict[str, Any], int]] = [
            ("single, max (64 conns)", single, {"rate": 0, "workers": 64}, 1),
            *[(f"single @ {r}/s", single, {"rate": r}, 1) for r in args.rates],
            (f"batch of {args.batch}, max (8 conns)", batch, {"rate": 0, "workers": 8}, args.batch),
        ]
        for label, target_file, options, per in steps:
            cpu_before = cpu_seconds(gw.process.pid)
            report = attack(target_file, duration=args.duration, **options)
            print(summary(label, report, per, cpu_seconds(gw.process.pid) - cpu_before))
            accepted += int(report["status_codes"].get("201", 0)) * per
        written = sum(end_offsets(bootstrap, topic)) - before
        print(f"records written {written:,}; events acknowledged with 201 {accepted:,} (warm-up included)")
    finally:
        gw.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 2000, 3000])
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    stack = LocalStack().state()
    raw_topic = new_topic(AdminClient({"bootstrap.servers": stack.bootstrap_servers}))
    raw = raw_produce(stack.bootstrap_servers, raw_topic, bodies(2000), 200_000)
    print(f"raw confluent-kafka produce (same broker, acks=all, ~400 B): {raw:,.0f} ev/s")
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            run(args, workers, Path(tmp))


if __name__ == "__main__":
    main()
