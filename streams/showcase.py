"""The stream part of ``make demo``: run the demo stream worker, feed it an order story, print
the live aggregates it keeps (read from its changelogs), then stop it gracefully.

    python -m evstream.streams.showcase [--orders 24]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from evstream.endpoints import kafka_settings, registry_settings
from evstream.output import console, table
from evstream.producers import EventProducer
from evstream.schemas.domain import OrderPlaced
from evstream.schemas.story import demo_story
from evstream.streams.settings import StreamsSettings
from evstream.streams.views import Aggregates, read_aggregates

__all__ = ["main"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _start(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "evstream", "worker", "evstream.streams.demo:app"],
        env={**env, "EVSTREAM_WORKER_HTTP_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _show(found: Aggregates) -> None:
    table(
        "customer totals (from the customer-totals table)",
        ["customer", "orders", "tier", "total"],
        [
            [
                c,
                found.orders.get(c, 0),
                found.tiers.get(c, ""),
                ", ".join(f"{v / 100:.2f} {k}" for k, v in t.items()),
            ]
            for c, t in sorted(found.totals.items())
        ],
    )
    windows = found.revenue_by_window()
    last = sorted(windows)[-5:]
    table(
        f"revenue per 1-minute window (last {len(last)} of {len(windows)})",
        ["window start (UTC)", "revenue"],
        [
            [
                time.strftime("%Y-%m-%d %H:%M", time.gmtime(start)),
                ", ".join(f"{v / 100:.2f} {k}" for k, v in windows[start].items()),
            ]
            for start in last
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=24)
    args = parser.parse_args()
    kafka, registry, streams = kafka_settings(None), registry_settings(None), StreamsSettings()
    env = {
        **os.environ,
        "EVSTREAM_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "EVSTREAM_REGISTRY_URL": registry.url,
    }
    before = sum(read_aggregates(kafka, streams.app_id).orders.values())
    port = _free_port()
    worker = _start(env, port)
    console.print(f"stream worker started (ops: http://127.0.0.1:{port}/readyz, /metrics)")
    try:
        deadline = time.monotonic() + 120
        while not _ready(port):
            if worker.poll() is not None:
                raise SystemExit(f"error: the stream worker exited ({worker.returncode}) before it was ready")
            if time.monotonic() > deadline:
                raise SystemExit("error: the stream worker did not become ready in 120 s")
            time.sleep(0.5)
        story = demo_story(args.orders)
        with EventProducer(kafka=kafka, registry=registry) as producer:
            for event in story:
                producer.publish(
                    event, topic=streams.orders_topic if event.topic == "orders" else streams.customers_topic
                )
            producer.flush(30)
        want = before + sum(isinstance(e, OrderPlaced) for e in story)
        console.print(
            f"published {len(story)} events; waiting for the aggregates ({want} orders counted in all)"
        )
        found = read_aggregates(kafka, streams.app_id)
        while sum(found.orders.values()) < want:
            if time.monotonic() > deadline + 120:
                raise SystemExit(
                    f"error: only {sum(found.orders.values())} of {want} orders aggregated in time"
                )
            time.sleep(1)
            found = read_aggregates(kafka, streams.app_id)
        _show(found)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    console.print("stream worker stopped (SIGTERM: committed and flushed)")


if __name__ == "__main__":
    main()
