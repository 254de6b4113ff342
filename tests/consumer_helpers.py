"""Shared pieces of the consumer tests: publishing, runners, `evstream consume` subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from evstream import KafkaSettings, RegistrySettings
from evstream.consumers import ConsumerRunner, ConsumerSettings, Handlers, failure_topic_specs
from evstream.producers import Delivery, EventProducer
from evstream.schemas.domain import (
    CustomerRegistered,
    CustomerUpdated,
    OrderCancelled,
    OrderPlaced,
    OrderShipped,
    PaymentCaptured,
)
from evstream.schemas.events import Event
from evstream.topics import apply_changes, describe_topics, plan_changes
from tests.conftest import Endpoints

ALL = (OrderPlaced, PaymentCaptured, OrderShipped, OrderCancelled, CustomerRegistered, CustomerUpdated)
FAST_RETRY = {
    "retry_attempts": 3,
    "retry_wait_initial_s": 0.001,
    "retry_wait_max_s": 0.01,
    "commit_interval_s": 0.5,
}


def publish(endpoints: Endpoints, topic: str, events: list[Event]) -> list[uuid.UUID]:
    """Publish and return the event ids, in order."""
    return [d.event_id for d in publish_deliveries(endpoints, topic, events)]


def declare_failure_topics(
    endpoints: Endpoints,
    group: str,
    topic: str,
    settings: ConsumerSettings | None = None,
    *,
    redrive: bool = False,
) -> list[str]:
    """Create the group's retry and dead-letter topics (and with ``redrive`` its redrive topic)
    that do not exist yet, as a deployment applying its topics file would (the runner creates
    none); the names created."""
    admin = AdminClient({"bootstrap.servers": endpoints.bootstrap_servers})
    partitions = describe_topics(admin, [topic])[topic].partitions
    specs = failure_topic_specs(group, {topic: partitions}, settings, redrive=redrive)
    existing = describe_topics(admin, [s.name for s in specs])
    missing = [s for s in specs if s.name not in existing]
    apply_changes(admin, plan_changes(missing, {}))
    return [s.name for s in missing]


def runner(
    endpoints: Endpoints, group: str, handlers: Handlers, topic: str, **options: Any
) -> ConsumerRunner:
    """A runner on ``topic`` with fast in-place retries; its failure topics are declared first
    (``redrive=True``: its redrive topic too)."""
    settings = ConsumerSettings(**{**FAST_RETRY, **options.pop("settings", {})})
    declare_failure_topics(endpoints, group, topic, settings, redrive=options.pop("redrive", False))
    return ConsumerRunner(
        group,
        handlers,
        topics=[topic],
        kafka=KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers),
        registry=RegistrySettings(url=endpoints.registry_url),
        settings=settings,
        **options,
    )


def worker_env(endpoints: Endpoints, handled_file: Path, **consumer: str) -> dict[str, str]:
    """Environment for an `evstream consume` subprocess running tests.integration.sample_handlers."""
    return {
        **os.environ,
        "EVSTREAM_BOOTSTRAP_SERVERS": endpoints.bootstrap_servers,
        "EVSTREAM_REGISTRY_URL": endpoints.registry_url,
        "EVSTREAM_TEST_HANDLED_FILE": str(handled_file),
        **consumer,
    }


def consume_cmd(group: str, topic: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "evstream",
        "consume",
        group,
        "tests.integration.sample_handlers:handlers",
        "--topic",
        topic,
        *extra,
    ]


def run_until_idle(
    cmd: list[str], env: dict[str, str], cwd: Path, idle_s: int
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cmd, "--until-idle", str(idle_s)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def publish_deliveries(endpoints: Endpoints, topic: str, events: list[Event]) -> list[Delivery]:
    """Publish and return each event's acknowledgement (id, partition, offset), in order."""
    with EventProducer(
        kafka=KafkaSettings(bootstrap_servers=endpoints.bootstrap_servers),
        registry=RegistrySettings(url=endpoints.registry_url),
    ) as producer:
        futures = [producer.publish(e, topic=topic) for e in events]
        producer.flush(60)
        return [f.result(timeout=60) for f in futures]
