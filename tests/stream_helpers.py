"""Running the demo stream app as real worker processes, and what its aggregates must be."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from evstream import KafkaSettings
from evstream.schemas.domain import CustomerRegistered, OrderPlaced
from evstream.schemas.events import Event
from evstream.streams.demo import tier_for
from evstream.streams.views import Aggregates, read_aggregates
from tests.conftest import Endpoints, TopicFactory
from tests.factories import mixed_events
from tests.helpers import wait_until


def expected(events: list[Event]) -> Aggregates:
    """The aggregates computed directly from the input."""
    want = Aggregates()
    totals: dict[str, dict[str, int]] = defaultdict(dict)
    for e in events:
        if isinstance(e, OrderPlaced):
            currency, amount = e.total.currency.value, e.total.amount_minor
            totals[e.customer_id][currency] = totals[e.customer_id].get(currency, 0) + amount
            want.orders[e.customer_id] = want.orders.get(e.customer_id, 0) + 1
            slot = (float(int(e.placed_at.timestamp()) // 60 * 60), currency)
            want.revenue[slot] = want.revenue.get(slot, 0) + amount
    want.totals = dict(totals)
    want.tiers = {c: tier_for(n).value for c, n in want.orders.items()}
    return want


def transitions(events: list[Event]) -> set[tuple[str, str, int]]:
    """(customer, tier, order count) of every tier change the input implies."""
    count: dict[str, int] = defaultdict(int)
    found = set()
    for e in events:
        if isinstance(e, OrderPlaced):
            count[e.customer_id] += 1
            n = count[e.customer_id]
            if n == 1 or tier_for(n) != tier_for(n - 1):
                found.add((e.customer_id, tier_for(n).value, n))
    return found


def registrations(customers: int) -> list[Event]:
    from tests.factories import START  # noqa: PLC0415

    return [
        CustomerRegistered(
            customer_id=f"customer-{i}",
            email=f"c{i}@example.com",
            name=f"Customer {i}",
            country="DE",
            registered_at=START,
        )
        for i in range(customers)
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def metric(port: int, name: str, **labels: str) -> float:
    """One sample of the worker's /metrics (0 when absent)."""
    _status, body = http(port, "/metrics")
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in body.splitlines():
        if line.startswith(name + "{"):
            key, _, value = line.rpartition(" ")
            found = ",".join(sorted(key[len(name) + 1 : -1].split(",")))
            if found == want:
                return float(value)
    return 0.0


@dataclass
class StreamApp:
    """One demo app instance (fresh topics and app id) and its worker processes."""

    endpoints: Endpoints
    orders: str
    customers: str
    tiers: str
    app_id: str
    repo_root: Path
    logs: Path
    workers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    store: str = "memory://"  # rocksdb:// keeps table files in logs/state (shared: one worker at a time)
    target: str = "evstream.streams.demo:app"
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, endpoints: Endpoints, new_topic: TopicFactory, repo_root: Path, logs: Path) -> StreamApp:
        return cls(
            endpoints,
            new_topic(partitions=6),
            new_topic(partitions=3),
            new_topic(partitions=3),
            f"app-{uuid.uuid4().hex[:8]}",
            repo_root,
            logs,
        )

    def env(self, port: int) -> dict[str, str]:
        return {
            **os.environ,
            "EVSTREAM_BOOTSTRAP_SERVERS": self.endpoints.bootstrap_servers,
            "EVSTREAM_REGISTRY_URL": self.endpoints.registry_url,
            "EVSTREAM_STREAMS_APP_ID": self.app_id,
            "EVSTREAM_STREAMS_ORDERS_TOPIC": self.orders,
            "EVSTREAM_STREAMS_CUSTOMERS_TOPIC": self.customers,
            "EVSTREAM_STREAMS_TIERS_TOPIC": self.tiers,
            "EVSTREAM_STREAMS_SESSION_TIMEOUT_S": "10",
            "EVSTREAM_WORKER_HTTP_PORT": str(port),
            "EVSTREAM_WORKER_STARTUP_TIMEOUT_S": "30",
            "EVSTREAM_WORKER_STALL_TIMEOUT_S": "30",
            "EVSTREAM_STREAMS_STORE": self.store,
            "EVSTREAM_STREAMS_DATA_DIR": str(self.logs / "state"),
            "EVSTREAM_WORKER_LAG_INTERVAL_S": "2",
            # windows stay open for the whole input: a partition read late after a kill must not
            # make its events late (the windows test covers closing and late events)
            "EVSTREAM_STREAMS_WINDOW_GRACE_S": "86400",
            **self.extra_env,
        }

    def start(self) -> int:
        """Start one worker; returns its ops port."""
        port = free_port()
        with (self.logs / f"worker-{port}.log").open("wb") as log:  # the child keeps its own copy
            self.workers[port] = subprocess.Popen(
                [sys.executable, "-m", "evstream", "worker", self.target],
                env=self.env(port),
                cwd=self.repo_root,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return port

    def start_ready(self, timeout: float = 120) -> int:
        """Start a worker and wait until /readyz says ready (a worker that exits fails the test,
        with its log)."""
        deadline = time.monotonic() + timeout
        port = self.start()
        while time.monotonic() < deadline:
            if http(port, "/readyz")[0] == 200:
                return port
            self.check_alive()
            time.sleep(0.2)
        raise AssertionError(f"no worker ready after {timeout}s")

    def check_alive(self) -> None:
        """Every started worker still runs (the native engine has no stall exits to restart)."""
        for port, worker in self.workers.items():
            if worker.poll() is not None:
                tail = (self.logs / f"worker-{port}.log").read_text()[-3000:]
                raise AssertionError(f"worker on port {port} exited {worker.returncode}:\n{tail}")

    def kill(self, port: int) -> None:
        """SIGKILL: no commit, no changelog flush, no goodbye to the group."""
        worker = self.workers.pop(port)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)

    def stop_all(self) -> list[int]:
        codes = []
        for worker in self.workers.values():
            worker.send_signal(signal.SIGTERM)
        for worker in self.workers.values():
            try:
                codes.append(worker.wait(timeout=60))
            except subprocess.TimeoutExpired:
                worker.kill()
                codes.append(-9)
        self.workers.clear()
        return codes

    def aggregates(self) -> Aggregates:
        return read_aggregates(KafkaSettings(bootstrap_servers=self.endpoints.bootstrap_servers), self.app_id)


def orders_only(count: int, seed: int) -> list[Event]:
    """The order events of ``mixed_events`` (customers are registered separately)."""
    return [e for e in mixed_events(count, seed=seed) if e.topic == "orders"]


def wait_exact(app: StreamApp, want: Aggregates, timeout: float) -> Aggregates:
    """Poll the changelogs until the aggregates equal ``want`` (every worker still running)."""
    last: list[Aggregates] = []

    def matches() -> Aggregates | None:
        app.check_alive()
        got = app.aggregates()
        last[:] = [got]
        same = (got.totals, got.orders, got.tiers, got.revenue) == (
            want.totals,
            want.orders,
            want.tiers,
            want.revenue,
        )
        return got if same else None

    try:
        return wait_until(matches, timeout=timeout, what="the aggregates to equal the input's", interval=1.0)
    except AssertionError as exc:
        got = last[0] if last else Aggregates()
        off = {c: (got.orders.get(c), n) for c, n in want.orders.items() if got.orders.get(c) != n}
        parts = {
            name: [
                (k, getattr(got, name).get(k), v)
                for k, v in getattr(want, name).items()
                if getattr(got, name).get(k) != v
            ]
            for name in ("totals", "tiers", "revenue")
        }
        raise AssertionError(
            f"{exc}; {len(off)} customers differ (counted, input): {list(off.items())[:5]}; "
            + "; ".join(f"{name}: {len(d)} differ, e.g. {d[:3]}" for name, d in parts.items() if d)
        ) from None
