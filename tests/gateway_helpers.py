"""Running `evstream gateway` as a real process for tests, and tokens for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from confluent_kafka.admin import AdminClient, NewTopic

from evstream.producers.gateway import hash_token, new_token
from evstream.schemas import Catalog
from evstream.schemas.domain import CATALOG, OrderCancelled, OrderPlaced, OrderShipped, PaymentCaptured
from tests.helpers import wait_until
from tests.kafka_helpers import end_offsets
from tests.stream_helpers import free_port

ORDERS_CATALOG = Catalog([OrderPlaced, PaymentCaptured, OrderShipped, OrderCancelled])
"""The order event types only (for clusters that have no customer topics)."""


@dataclass(frozen=True)
class Token:
    name: str
    secret: str
    event_types: tuple[str, ...] = ("*",)
    rate_limit: str | None = None

    def spec(self) -> dict[str, object]:
        spec: dict[str, object] = {
            "name": self.name,
            "sha256": hash_token(self.secret),
            "event_types": list(self.event_types),
        }
        if self.rate_limit is not None:
            spec["rate_limit"] = self.rate_limit
        return spec

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


def token(name: str, *types: str, rate_limit: str | None = None) -> Token:
    return Token(name, new_token(), types or ("*",), rate_limit)


def topic_map(orders: str, customers: str, tiers: str) -> dict[str, str]:
    """Every catalog event type mapped onto the test's topics (by its catalog topic)."""
    by_catalog = {"orders": orders, "customers": customers, "customer-tiers": tiers}
    return {m.event_type(): by_catalog[m.topic] for m in CATALOG}


@contextmanager
def gateway_topics(bootstrap: str, prefix: str) -> Iterator[dict[str, str]]:
    """Fresh 2-partition ``orders``/``customers``/``tiers`` topics (every leader answering),
    deleted afterwards: ``{"orders": name, ...}``."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    suffix = uuid.uuid4().hex[:8]
    names = {kind: f"{prefix}-{kind}-{suffix}" for kind in ("orders", "customers", "tiers")}
    for future in admin.create_topics([NewTopic(n, num_partitions=2) for n in names.values()]).values():
        future.result(timeout=30)
    for name in names.values():
        end_offsets(bootstrap, name)
    try:
        yield names
    finally:
        for future in admin.delete_topics(list(names.values()), request_timeout=30).values():
            future.result(timeout=30)


@dataclass
class Gateway:
    """One `evstream gateway` process; stopped by :meth:`stop`."""

    bootstrap: str
    registry: str
    topics: dict[str, str]
    tokens: list[Token]
    log: Path
    settings: dict[str, str] = field(default_factory=dict)
    port: int = 0
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, ready: bool = True) -> Gateway:
        self.port = free_port()
        env = {
            **os.environ,
            "EVSTREAM_BOOTSTRAP_SERVERS": self.bootstrap,
            "EVSTREAM_REGISTRY_URL": self.registry,
            "EVSTREAM_GATEWAY_TOPICS": json.dumps(self.topics),
            "EVSTREAM_GATEWAY_TOKENS": json.dumps([t.spec() for t in self.tokens]),
            **self.settings,
        }
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "evstream", "gateway", "--port", str(self.port), *self.extra_args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_until(
            lambda: self._status("/readyz" if ready else "/healthz") == 200,
            timeout=60,
            what=f"the gateway on port {self.port} (log {self.log})",
            interval=0.2,
        )
        return self

    def _status(self, path: str) -> int:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"gateway exited {self.process.returncode}: {self.log.read_text()[-2000:]}")
        try:
            return httpx.get(self.url + path, timeout=5).status_code
        except httpx.HTTPError:
            return 0

    def post(self, event_type: str, tok: Token, body: object) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/events/{event_type}", json=body, headers=tok.headers, timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def orders_gateway(bootstrap: str, registry: str, topic: str, tok: Token, log: Path) -> Gateway:
    """A started gateway for the order event types only, all on ``topic``, with a 3 s delivery
    timeout (for brokers without the customer topics, in fault tests)."""
    return Gateway(
        bootstrap,
        registry,
        {m.event_type(): topic for m in ORDERS_CATALOG},
        [tok],
        log,
        settings={
            "EVSTREAM_GATEWAY_DELIVERY_TIMEOUT_MS": "3000",
            "EVSTREAM_GATEWAY_CATALOG": "tests.gateway_helpers:ORDERS_CATALOG",
        },
    ).start()
