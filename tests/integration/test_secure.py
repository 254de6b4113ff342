"""Every client against a secured stack (`stack up --secure`): SASL_SSL, SCRAM users, ACLs enforced.

One private secured 1-node stack (with its registry on kafkasql over SASL_SSL) serves the
module. The application user ``app`` gets only the ACLs the README lists per component, declared
as code and applied with ``topics apply`` as the admin; the error cases check typed errors, one
line in the CLI, and that nothing was written (end offsets unchanged). Every output of the run is
kept and grepped for the passwords at the end.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from evstream import DeadLetter, KafkaSettings, RegistrySettings
from evstream.consumers import ConsumerRunner, ConsumerSettings, Handlers, MessageContext
from evstream.consumers.routing import failure_topic_specs
from evstream.errors import (
    GroupAuthorizationError,
    KafkaAuthenticationError,
    KafkaTlsError,
    PublishAuthenticationError,
    PublishTlsError,
    TopicAuthorizationError,
)
from evstream.producers import EventProducer, ProducerSettings
from evstream.schemas.events import Event
from evstream.stack import LocalStack
from evstream.stack.manager import admin_config
from evstream.stack.security import make_ca, pem
from evstream.topics.acls import PrincipalAcls, apply_acl_changes, describe_acls, plan_acls
from tests.consumer_helpers import ALL, FAST_RETRY
from tests.factories import mixed_events
from tests.helpers import one_line_error, run_cli, wait_until

pytestmark = pytest.mark.slow

OUTPUTS: list[str] = []  # every CLI output and error message of this module: grepped for secrets


@dataclass(frozen=True)
class Secured:
    bootstrap: str
    registry_url: str
    data_dir: Path
    ca_file: Path
    admin_conf: dict[str, Any] = field(repr=False)  # never in an assertion's output
    passwords: dict[str, str] = field(repr=False)

    def kafka(self, user: str = "app", **over: Any) -> KafkaSettings:
        fields: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": user,
            "sasl_password_file": self.data_dir / "security" / f"{user}.password",
            "ssl_ca_location": self.ca_file,
        }
        return KafkaSettings.model_validate(fields | over)

    def env(self, user: str = "app", password_file: Path | None = None) -> dict[str, str]:
        return {
            "EVSTREAM_BOOTSTRAP_SERVERS": self.bootstrap,
            "EVSTREAM_REGISTRY_URL": self.registry_url,
            "EVSTREAM_SECURITY_PROTOCOL": "SASL_SSL",
            "EVSTREAM_SASL_MECHANISM": "SCRAM-SHA-512",
            "EVSTREAM_SASL_USERNAME": user,
            "EVSTREAM_SASL_PASSWORD_FILE": str(
                password_file or self.data_dir / "security" / f"{user}.password"
            ),
            "EVSTREAM_SSL_CA_LOCATION": str(self.ca_file),
        }

    def admin(self) -> AdminClient:
        return AdminClient(self.admin_conf)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    reuse = os.environ.get("EVSTREAM_TEST_SECURE_STACK_DIR")  # a secured stack kept across runs
    data_dir = Path(reuse) if reuse else tmp_path_factory.mktemp("secure-stack")
    stack = LocalStack(data_dir, start_timeout=180, stop_timeout=10)
    state = stack.up(secure=True)
    try:
        found = json.loads((data_dir / "security" / "secrets.json").read_text())
        assert state.registry_url is not None
        yield Secured(
            bootstrap=state.bootstrap_servers,
            registry_url=state.registry_url,
            data_dir=data_dir,
            ca_file=data_dir / "security" / "ca.pem",
            admin_conf=admin_config(state),
            passwords={**found["users"], "keystore": found["keystore_password"]},
        )
    finally:
        if not reuse:
            stack.down(purge=True)


def cli(*args: str, env: dict[str, str]) -> Any:
    proc = run_cli(*args, env=env)
    OUTPUTS.extend([proc.stdout, proc.stderr])
    return proc


def new_topic(secured: Secured, partitions: int = 2, name: str = "") -> str:
    name = name or f"s-{uuid.uuid4().hex[:10]}"
    admin = secured.admin()
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=30)
    wait_until(
        lambda: all(
            p.leader >= 0 for p in admin.list_topics(name, timeout=5).topics[name].partitions.values()
        ),
        timeout=30,
        what=f"leaders of {name}",
    )
    return name


def grant(secured: Secured, *grants: dict[str, Any], user: str = "app") -> None:
    """Add ACLs for ``User:<user>`` as the admin (as code, never deleting others' rules)."""
    declared = [PrincipalAcls.model_validate({"principal": f"User:{user}", "allow": list(grants)})]
    admin = secured.admin()
    apply_acl_changes(admin, plan_acls(declared, describe_acls(admin)), delete=False)


def end_offsets(secured: Secured, topic: str) -> list[int]:
    consumer = Consumer({**secured.admin_conf, "group.id": "probe", "isolation.level": "read_uncommitted"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in sorted(parts)
        ]
    finally:
        consumer.close()


def committed(secured: Secured, group: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({**secured.admin_conf, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in tps]
    finally:
        consumer.close()


def producer_acls(topic: str) -> list[dict[str, Any]]:
    """What the README lists for EventProducer (idempotent): write + describe on its topics."""
    return [{"topic": topic, "operations": ["write", "describe"]}]


def consumer_acls(group: str, topic: str, settings: ConsumerSettings) -> list[dict[str, Any]]:
    """ConsumerRunner: read its topics and retry topics, write retry + dead-letter topics, read its group."""
    grants: list[dict[str, Any]] = [
        {"topic": topic, "operations": ["read", "describe"]},
        {"group": group, "operations": ["read", "describe"]},
    ]
    for spec in failure_topic_specs(group, {topic: 2}, settings):
        grants.append({"topic": spec.name, "operations": ["read", "write", "describe"]})
    return grants


def publish(secured: Secured, topic: str, events: list[Event], **settings: Any) -> list[Any]:
    with EventProducer(
        kafka=secured.kafka(),
        registry=RegistrySettings(url=secured.registry_url),
        settings=ProducerSettings(**settings),
    ) as producer:
        futures = [producer.publish(e, topic=topic) for e in events]
        producer.flush(30)
        return [f.result(timeout=30) for f in futures]


# ---------------------------------------------------------------------------- the stack


def test_up_secure_prints_what_a_client_needs_and_keeps_secrets_owner_only(secured: Secured) -> None:
    proc = cli("stack", "up", "--secure", "--data-dir", str(secured.data_dir), "-o", "json", env={})
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)["security"]
    assert info["security_protocol"] == "SASL_SSL"
    assert info["sasl_mechanism"] == "SCRAM-SHA-512"
    assert Path(info["ca_file"]) == secured.ca_file
    assert (info["admin_user"], info["app_user"]) == ("admin", "app")
    for path in [info["secrets_file"], *info["password_files"].values()]:
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    assert stat.S_IMODE((secured.data_dir / "node-1" / "server.properties").stat().st_mode) == 0o600
    config = (secured.data_dir / "node-1" / "server.properties").read_text()
    assert "allow.everyone.if.no.acl.found=false" in config
    assert "CONTROLLER:SSL" in config
    assert "listener.name.controller.ssl.client.auth=required" in config


def test_acls_as_code_plan_apply_idempotent_and_removal_only_with_the_flag(
    secured: Secured, tmp_path: Path
) -> None:
    topic = f"acl-{uuid.uuid4().hex[:8]}"
    principal = f"User:reporter-{topic}"
    declared: dict[str, Any] = {
        "topics": [{"name": topic, "partitions": 1}],
        "acls": [
            {
                "principal": principal,
                "allow": [
                    {"topic": topic, "operations": ["read", "describe"]},
                    {"group_prefix": "reports-", "operations": ["read"]},
                ],
            }
        ],
    }
    path = tmp_path / "topics.yaml"
    path.write_text(yaml.safe_dump(declared))
    env = secured.env("admin")

    def mine(out: str) -> list[tuple[str, str, str]]:
        rows = json.loads(out)["acls"]
        return sorted((r["action"], r["name"], r["operation"]) for r in rows if r["principal"] == principal)

    planned = cli("topics", "plan", "-f", str(path), "-o", "json", env=env)
    assert planned.returncode == 0, planned.stderr
    assert mine(planned.stdout) == sorted(
        [("add", "reports-", "read"), ("add", topic, "describe"), ("add", topic, "read")]
    )
    assert cli("topics", "apply", "-f", str(path), env=env).returncode == 0
    again = cli("topics", "plan", "-f", str(path), "-o", "json", env=env)
    assert {a for a, _, _ in mine(again.stdout)} == {"unchanged"}

    declared["acls"][0]["allow"].pop()  # the group rule leaves the file
    path.write_text(yaml.safe_dump(declared))
    shown = cli("topics", "plan", "-f", str(path), "-o", "json", env=env)
    assert ("remove", "reports-", "read") in mine(shown.stdout)
    kept = cli("topics", "apply", "-f", str(path), env=env)
    assert "pass --delete-acls" in kept.stdout
    assert ("remove", "reports-", "read") in mine(
        cli("topics", "plan", "-f", str(path), "-o", "json", env=env).stdout
    )
    assert cli("topics", "apply", "-f", str(path), "--delete-acls", env=env).returncode == 0
    final = mine(cli("topics", "plan", "-f", str(path), "-o", "json", env=env).stdout)
    assert final == [("unchanged", topic, "describe"), ("unchanged", topic, "read")]


# ---------------------------------------------------------------------------- components, least privilege


def test_producer_idempotent_and_transactional_with_the_app_user(secured: Secured) -> None:
    topic = new_topic(secured)
    txn_id = f"tx-{uuid.uuid4().hex[:8]}"
    grant(
        secured,
        *producer_acls(topic),
        {"transactional_id": txn_id, "operations": ["write", "describe"]},
    )
    events = [e for e in mixed_events(40) if e.topic == "orders"][:10]
    delivered = publish(secured, topic, events)
    assert len(delivered) == len(events)
    with EventProducer(
        kafka=secured.kafka(),
        registry=RegistrySettings(url=secured.registry_url),
        settings=ProducerSettings(transactional_id=txn_id),
    ) as producer:
        with producer.transaction():
            futures = [producer.publish(e, topic=topic) for e in events]
        assert [f.result(timeout=30).topic for f in futures] == [topic] * len(events)
    # 10 idempotent + 10 transactional records and a commit marker per partition written to
    assert sum(end_offsets(secured, topic)) >= 2 * len(events)


def test_consumer_runner_with_retry_and_dlq_then_groups_describe(secured: Secured) -> None:
    topic = new_topic(secured)
    group = f"g-{uuid.uuid4().hex[:8]}"
    settings = ConsumerSettings.model_validate(FAST_RETRY)
    for spec in failure_topic_specs(group, {topic: 2}, settings):
        new_topic(secured, 2, spec.name)
    grant(secured, *producer_acls(topic), *consumer_acls(group, topic, settings))
    events = [e for e in mixed_events(60) if e.topic == "orders"][:12]
    ids = [d.event_id for d in publish(secured, topic, events)]
    refused = set(ids[:2])
    handled: list[uuid.UUID] = []
    handlers = Handlers()

    @handlers.on(*ALL)
    def handle(event: Event, ctx: MessageContext) -> None:
        if ctx.envelope.event_id in refused:
            raise DeadLetter("refused")
        handled.append(ctx.envelope.event_id)

    stats = ConsumerRunner(
        group,
        handlers,
        topics=[topic],
        kafka=secured.kafka(),
        registry=RegistrySettings(url=secured.registry_url),
        settings=settings,
    ).run(until_idle_s=3)
    assert sorted(handled) == sorted(set(ids) - refused)
    assert stats.dead_lettered == 2
    assert sum(end_offsets(secured, f"{topic}.dlq")) == 2

    described = cli("groups", "describe", group, "-o", "json", env=secured.env())
    assert described.returncode == 0, described.stderr
    info = json.loads(described.stdout)
    assert info["total_lag"] == 0
    assert sum(p["committed"] for p in info["partitions"]) == len(ids)


def test_dlq_redrive_with_the_app_user(secured: Secured) -> None:
    """`dlq redrive`: read + describe on the dead-letter topic, read on its group
    evstream-redrive.<dlq>, write + describe on the failing group's redrive topic."""
    topic = new_topic(secured)
    group = f"g-{uuid.uuid4().hex[:8]}"
    settings = ConsumerSettings.model_validate(FAST_RETRY)
    for spec in failure_topic_specs(group, {topic: 2}, settings, redrive=True):
        new_topic(secured, 2, spec.name)
    back = f"{topic}.{group}.redrive"
    dlq = f"{topic}.dlq"
    grant(
        secured,
        *producer_acls(topic),
        *consumer_acls(group, topic, settings),
        {"group": f"evstream-redrive.{dlq}", "operations": ["read", "describe"]},
        {"topic": back, "operations": ["read", "write", "describe"]},
    )
    events = [e for e in mixed_events(30) if e.topic == "orders"][:5]
    publish(secured, topic, events)
    handlers = Handlers()

    @handlers.on(*ALL)
    def handle(event: Event, ctx: MessageContext) -> None:
        raise DeadLetter("downstream refused it")

    runner = ConsumerRunner(
        group,
        handlers,
        topics=[topic],
        kafka=secured.kafka(),
        registry=RegistrySettings(url=secured.registry_url),
        settings=settings,
    )
    assert runner.run(until_idle_s=2).dead_lettered == len(events)
    before = sum(end_offsets(secured, topic))
    proc = cli("dlq", "redrive", "--dlq", dlq, "-o", "json", env=secured.env())
    assert proc.returncode == 0, proc.stderr
    assert sum(end_offsets(secured, back)) == len(events)
    assert sum(end_offsets(secured, topic)) == before  # not the shared source topic


def test_request_reply_with_the_app_user(secured: Secured) -> None:
    """Requester: write + describe on the request topic, read + describe on the reply topic (no
    group). Responder: a ConsumerRunner's ACLs + write + describe on the reply topic."""
    from evstream.consumers import Requester, reply_with  # noqa: PLC0415
    from tests.integration.test_request_reply import PriceQuoted, PriceQuoteRequested  # noqa: PLC0415

    requests, replies = new_topic(secured), new_topic(secured)
    group = f"quotes-{uuid.uuid4().hex[:6]}"
    settings = ConsumerSettings.model_validate(FAST_RETRY)
    for spec in failure_topic_specs(group, {requests: 2}, settings):
        new_topic(secured, 2, spec.name)
    grant(
        secured,
        *producer_acls(requests),
        *producer_acls(replies),
        {"topic": replies, "operations": ["read"]},
        *consumer_acls(group, requests, settings),
    )
    registry = RegistrySettings(url=secured.registry_url)
    with EventProducer(kafka=secured.kafka(), registry=registry) as producer:
        handlers = Handlers()

        @handlers.on(PriceQuoteRequested)
        @reply_with(producer)
        def quote(request: PriceQuoteRequested, ctx: MessageContext) -> PriceQuoted:
            return PriceQuoted(sku=request.sku, total_minor=request.quantity * 250)

        service = ConsumerRunner(
            group, handlers, topics=[requests], kafka=secured.kafka(), registry=registry, settings=settings
        )
        thread = threading.Thread(target=service.run, daemon=True)
        thread.start()
        try:
            with Requester(producer, replies, kafka=secured.kafka(), registry=registry) as client:
                answer = client.request(
                    PriceQuoteRequested(sku="S-1", quantity=4), PriceQuoted, topic=requests, timeout=30
                )
        finally:
            service.stop()
            thread.join(30)
    assert (answer.sku, answer.total_minor) == ("S-1", 1000)


def test_gateway_with_the_app_user_and_no_secret_in_metrics(secured: Secured, tmp_path: Path) -> None:
    """The HTTP gateway is an EventProducer: write + describe on its topics."""
    import httpx  # noqa: PLC0415

    from tests.gateway_helpers import ORDERS_CATALOG, Gateway, token  # noqa: PLC0415
    from tests.integration.test_gateway import orders  # noqa: PLC0415

    topic = new_topic(secured)
    grant(secured, *producer_acls(topic))
    writer = token("writer")
    gateway = Gateway(
        secured.bootstrap,
        secured.registry_url,
        {m.event_type(): topic for m in ORDERS_CATALOG},
        [writer],
        tmp_path / "gateway.log",
        settings={**secured.env(), "EVSTREAM_GATEWAY_CATALOG": "tests.gateway_helpers:ORDERS_CATALOG"},
    ).start()
    try:
        accepted = gateway.post("OrderPlaced", writer, orders(1, seed=7)[0])
        assert accepted.status_code == 201, accepted.text
        metrics = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    finally:
        gateway.stop()
    OUTPUTS.extend([accepted.text, metrics, (tmp_path / "gateway.log").read_text()])
    assert sum(end_offsets(secured, topic)) == 1


def test_replay_plan_and_apply_with_the_app_user(secured: Secured, tmp_path: Path) -> None:
    """`replay plan/apply`: `read`, `describe` on the group and on its topics."""
    topic = new_topic(secured)
    group = f"g-{uuid.uuid4().hex[:8]}"
    settings = ConsumerSettings.model_validate(FAST_RETRY)
    for spec in failure_topic_specs(group, {topic: 2}, settings):
        new_topic(secured, 2, spec.name)
    grant(secured, *producer_acls(topic), *consumer_acls(group, topic, settings))
    publish(secured, topic, [e for e in mixed_events(40) if e.topic == "orders"][:10])
    handlers = Handlers()

    @handlers.on(*ALL)
    def handle(event: Event, ctx: MessageContext) -> None:
        return None

    ConsumerRunner(
        group,
        handlers,
        topics=[topic],
        kafka=secured.kafka(),
        registry=RegistrySettings(url=secured.registry_url),
        settings=settings,
    ).run(until_idle_s=2)
    ends = end_offsets(secured, topic)
    assert committed(secured, group, topic, 2) == ends
    plan_file = tmp_path / "plan.json"
    env = secured.env()
    planned = cli(
        "replay", "plan", "-g", group, "-t", topic, "--shift-by", "-1", "--save", str(plan_file), env=env
    )
    assert planned.returncode == 0, planned.stderr
    applied = cli("replay", "apply", str(plan_file), env=env)
    assert applied.returncode == 0, applied.stderr
    assert committed(secured, group, topic, 2) == [max(e - 1, 0) for e in ends]


def test_bounded_replay_with_the_app_user(secured: Secured) -> None:
    """BoundedReplay: `read`, `describe` on the topic; `read` on the group evstream-replay.<name>."""
    from evstream.consumers.replay import BoundedReplay  # noqa: PLC0415

    topic = new_topic(secured)
    name = f"r{uuid.uuid4().hex[:8]}"
    grant(
        secured,
        *producer_acls(topic),
        {"topic": topic, "operations": ["read"]},
        {"group": f"evstream-replay.{name}", "operations": ["read", "describe"]},
    )
    events = [e for e in mixed_events(40) if e.topic == "orders"][:8]
    publish(secured, topic, events)
    seen: list[uuid.UUID] = []
    handlers = Handlers()

    @handlers.on(*ALL)
    def handle(event: Event, ctx: MessageContext) -> None:
        seen.append(ctx.envelope.event_id)

    result = BoundedReplay(
        topic=topic,
        start="earliest",
        handlers=handlers,
        kafka=secured.kafka(),
        registry=RegistrySettings(url=secured.registry_url),
        name=name,
    ).run()
    assert result.processed == len(events)
    assert len(set(seen)) == len(events)


def test_aiokafka_config_connects_the_faust_client_library(secured: Secured) -> None:
    """aiokafka (what faust workers use) with `aiokafka_config`: SCRAM over verified TLS, app user."""
    import asyncio  # noqa: PLC0415

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]  # noqa: PLC0415

    from evstream.settings import aiokafka_config  # noqa: PLC0415

    topic = new_topic(secured, 1)
    group = f"faust-{uuid.uuid4().hex[:6]}"
    grant(
        secured,
        {"topic": topic, "operations": ["read", "write", "describe"]},
        {"group": group, "operations": ["read", "describe"]},
    )
    conf = aiokafka_config(secured.kafka())

    async def roundtrip() -> bytes | None:
        producer = AIOKafkaProducer(**conf)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"hello")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, group_id=group, auto_offset_reset="earliest", **conf)
        await consumer.start()
        try:
            msg = await asyncio.wait_for(consumer.getone(), 30)
            value: bytes | None = msg.value
            return value
        finally:
            await consumer.stop()

    assert asyncio.run(roundtrip()) == b"hello"


def stream_worker_acls(app_id: str, sources: list[str], sinks: list[str]) -> list[dict[str, Any]]:
    """What the README lists for `evstream worker` of a stream app: read its source topics, the
    producer's ACLs on the topics it publishes to, read its group (the app id), create, read and
    write its own topics (``<app id>-``: re-keyed topics, changelogs, its dead-letter topic). Each
    of create/read/write on the prefix and the group's read was found necessary by dropping it;
    no cluster ACL, describe_configs or group describe is needed."""
    return [
        *({"topic": t, "operations": ["read", "describe"]} for t in sources),
        *(g for t in sinks for g in producer_acls(t)),
        {"group": app_id, "operations": ["read"]},
        {"topic_prefix": f"{app_id}-", "operations": ["create", "read", "write", "describe"]},
    ]


def distinct_event_ids(secured: Secured, topic: str, count: int, timeout: float) -> set[str]:
    """The event ids on ``topic`` (read as the admin from the beginning) once ``count`` are there."""
    from evstream.schemas import Envelope  # noqa: PLC0415

    consumer = Consumer({**secured.admin_conf, "group.id": f"probe-{uuid.uuid4().hex[:6]}"})
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    seen: set[str] = set()
    try:

        def enough() -> bool:
            for msg in consumer.consume(100, 0.5):
                if msg.error() is None:
                    seen.add(str(Envelope.from_headers(msg.headers() or []).event_id))
            return len(seen) >= count

        wait_until(enough, timeout=timeout, what=f"{count} events on {topic}", interval=0)
        for msg in consumer.consume(100, 1.0):  # nothing more than implied: no extra event
            if msg.error() is None:
                seen.add(str(Envelope.from_headers(msg.headers() or []).event_id))
    finally:
        consumer.close()
    return seen


def test_stream_worker_with_the_app_user_and_no_secret_in_its_log(secured: Secured, tmp_path: Path) -> None:
    """`evstream worker evstream.streams.demo:app` (the native engine) as the app user with the
    README's stream worker ACLs: SCRAM-SHA-512 over verified TLS for its consumer, its producer
    and the topics it creates; exact table totals, one derived event per tier change."""
    from evstream.schemas.domain import OrderPlaced  # noqa: PLC0415
    from evstream.streams.views import read_aggregates  # noqa: PLC0415
    from tests.conftest import Endpoints  # noqa: PLC0415
    from tests.stream_helpers import StreamApp, expected, transitions  # noqa: PLC0415

    orders, customers, tiers = new_topic(secured, 3), new_topic(secured, 3), new_topic(secured, 1)
    app_id = f"app-{uuid.uuid4().hex[:8]}"
    grant(secured, *stream_worker_acls(app_id, sources=[orders, customers], sinks=[tiers]))
    events: list[Event] = [e for e in mixed_events(240, seed=23, customers=3) if isinstance(e, OrderPlaced)]
    with EventProducer(
        kafka=secured.kafka("admin"), registry=RegistrySettings(url=secured.registry_url)
    ) as producer:  # the input comes from elsewhere: the worker may not write it
        for event in events:
            producer.publish(event, topic=orders)
        assert producer.flush(30) == 0
    logs = tmp_path / "worker"
    logs.mkdir()
    app = StreamApp(
        Endpoints(secured.bootstrap, secured.registry_url, "secured"),
        orders,
        customers,
        tiers,
        app_id,
        Path(__file__).resolve().parents[2],
        logs,
        extra_env=secured.env(),
    )
    want, implied = expected(events), transitions(events)
    assert sum(want.orders.values()) == len(events) == 40
    assert {tier for _, tier, _ in implied} == {"bronze", "silver", "gold"}
    admin = secured.kafka("admin")
    try:
        app.start_ready(timeout=45)

        def exact() -> bool:
            got = read_aggregates(admin, app_id)
            return (got.totals, got.orders, got.tiers, got.revenue) == (
                want.totals,
                want.orders,
                want.tiers,
                want.revenue,
            )

        wait_until(exact, timeout=30, what="the aggregates to equal the input's", interval=0.5)
        assert len(distinct_event_ids(secured, tiers, len(implied), timeout=15)) == len(implied)
    finally:
        codes = app.stop_all()
        log_text = "\n".join(p.read_text(errors="replace") for p in sorted(logs.glob("worker-*.log")))
        OUTPUTS.append(log_text)
    assert codes == [0], log_text[-3000:]
    assert log_text.strip(), "the worker wrote no log"
    for name, password in secured.passwords.items():
        assert password not in log_text, f"the {name} password appears in the worker's output"


def test_a_stream_worker_refused_an_acl_exits_in_one_line_instead_of_hanging(
    secured: Secured, tmp_path: Path
) -> None:
    """`evstream worker` of the demo app missing one of the README's stream worker ACLs (READ on
    a source topic, READ on its group, DESCRIBE on a source topic): exits 1 with one ``error:``
    line naming the resource (DESCRIBE when even the topic's metadata is refused), no traceback,
    within a minute. The three workers run at once (one stack, one wait)."""
    cases = {"read": ("topic", "READ"), "group": ("group", "READ"), "describe": ("topic", "DESCRIBE")}
    runs: dict[str, tuple[str, dict[str, str]]] = {}
    for case in cases:
        orders, customers, tiers = new_topic(secured, 3), new_topic(secured, 3), new_topic(secured, 1)
        app_id = f"app-{uuid.uuid4().hex[:8]}"
        grants = stream_worker_acls(app_id, sources=[orders, customers], sinks=[tiers])
        if case == "read":
            grants[0] = {"topic": orders, "operations": ["describe"]}
        elif case == "group":
            grants = [g for g in grants if "group" not in g]
        else:
            grants = grants[1:]  # nothing on the orders topic
        grant(secured, *grants)
        env = {
            **secured.env(),
            "EVSTREAM_STREAMS_APP_ID": app_id,
            "EVSTREAM_STREAMS_ORDERS_TOPIC": orders,
            "EVSTREAM_STREAMS_CUSTOMERS_TOPIC": customers,
            "EVSTREAM_STREAMS_TIERS_TOPIC": tiers,
            "EVSTREAM_STREAMS_STORE": "memory://",
            "EVSTREAM_STREAMS_DATA_DIR": str(tmp_path / app_id),
            "EVSTREAM_WORKER_HTTP_PORT": "0",
        }
        runs[case] = (app_id if case == "group" else orders, env)

    def run(case: str) -> tuple[Any, float]:
        started = time.monotonic()
        proc = run_cli("worker", "evstream.streams.demo:app", env=runs[case][1], timeout=100)
        return proc, time.monotonic() - started

    with ThreadPoolExecutor(len(cases)) as pool:
        done = dict(zip(cases, pool.map(run, cases), strict=True))
    for case, (proc, elapsed) in done.items():
        OUTPUTS.extend([proc.stdout, proc.stderr])
        kind, operation = cases[case]
        resource = runs[case][0]
        assert proc.returncode == 1, (case, proc.returncode, proc.stderr[-2000:])
        line = one_line_error(proc)
        assert f"not authorized to {operation} " in line, line
        assert f"{{{kind}: {resource}, operations: [" in line, line
        assert elapsed < 60, (case, elapsed)


# ---------------------------------------------------------------------------- clear errors, nothing written


def test_missing_write_acl_is_a_typed_one_line_error_and_nothing_is_written(secured: Secured) -> None:
    topic = new_topic(secured)
    grant(secured, {"topic": topic, "operations": ["describe"]})  # may see it, not write it
    before = end_offsets(secured, topic)
    event = next(e for e in mixed_events(10) if e.topic == "orders")
    with pytest.raises(TopicAuthorizationError) as info:
        publish(secured, topic, [event])
    error = info.value
    OUTPUTS.append(str(error))
    assert (error.topic, error.resource, error.operation) == (topic, topic, "WRITE")
    assert f"not authorized to WRITE to topic {topic!r}" in str(error)
    assert "\n" not in str(error)

    data = json.dumps({"type": event.event_type(), "data": event.model_dump(mode="json")})
    path = secured.data_dir.parent / f"{topic}.jsonl"
    path.write_text(data + "\n")
    proc = cli("publish", topic, "--file", str(path), env=secured.env())
    assert proc.returncode != 0
    assert "not authorized to WRITE to topic" in one_line_error(proc)
    assert end_offsets(secured, topic) == before


def test_wrong_password_unknown_user_and_ca_mismatch_fail_fast_and_typed(secured: Secured) -> None:
    topic = new_topic(secured)
    grant(secured, *producer_acls(topic))
    before = end_offsets(secured, topic)
    wrong = secured.data_dir.parent / "wrong.password"
    wrong.write_text("not-the-password")
    other_ca = secured.data_dir.parent / "other-ca.pem"
    other_ca.write_bytes(pem(make_ca("someone else's CA")[1]))
    event = next(e for e in mixed_events(10) if e.topic == "orders")
    cases: list[tuple[KafkaSettings, type[Exception]]] = [
        (secured.kafka(sasl_password_file=wrong), PublishAuthenticationError),
        (secured.kafka("ghost", sasl_password_file=wrong), PublishAuthenticationError),
        (secured.kafka(ssl_ca_location=other_ca), PublishTlsError),
    ]
    for kafka, expected in cases:
        with (
            pytest.raises(expected) as info,
            EventProducer(kafka=kafka, registry=RegistrySettings(url=secured.registry_url)) as producer,
        ):
            producer.publish(event, topic=topic).result(timeout=20)
        OUTPUTS.append(str(info.value))
        assert "\n" not in str(info.value)
    assert end_offsets(secured, topic) == before

    # A consumer with the wrong password, and a client that does not trust the broker: one line, exit 1.
    consumer = cli(
        "consume",
        "g-wrong-password",
        "tests.integration.sample_handlers:handlers",
        "--topic",
        topic,
        "--until-idle",
        "5",
        env={**secured.env(password_file=wrong), "EVSTREAM_TEST_HANDLED_FILE": str(wrong) + ".handled"},
    )
    assert consumer.returncode == 1
    assert one_line_error(consumer).startswith("error: Kafka refused the SASL login as 'app'")
    untrusted = cli("topics", "list", env={**secured.env(), "EVSTREAM_SSL_CA_LOCATION": str(other_ca)})
    assert untrusted.returncode == 1
    assert "error: the broker's TLS certificate failed verification" in one_line_error(untrusted)

    handlers = Handlers()

    @handlers.on(*ALL)
    def handle(event: Event, ctx: MessageContext) -> None:
        return None

    with pytest.raises(KafkaAuthenticationError):
        ConsumerRunner(
            f"g-{uuid.uuid4().hex[:6]}",
            handlers,
            topics=[topic],
            kafka=secured.kafka(sasl_password_file=wrong),
            registry=RegistrySettings(url=secured.registry_url),
            settings=ConsumerSettings.model_validate(FAST_RETRY),
        ).run(until_idle_s=10)
    with pytest.raises(KafkaTlsError):
        ConsumerRunner(
            f"g-{uuid.uuid4().hex[:6]}",
            handlers,
            topics=[topic],
            kafka=secured.kafka(ssl_ca_location=other_ca),
            registry=RegistrySettings(url=secured.registry_url),
            settings=ConsumerSettings.model_validate(FAST_RETRY),
        ).run(until_idle_s=10)


def test_missing_group_acl_stops_the_consumer_with_a_typed_error(secured: Secured) -> None:
    topic = new_topic(secured)
    group = f"g-{uuid.uuid4().hex[:8]}"
    settings = ConsumerSettings.model_validate(FAST_RETRY)
    for spec in failure_topic_specs(group, {topic: 2}, settings):
        new_topic(secured, 2, spec.name)
    grants = [g for g in consumer_acls(group, topic, settings) if "group" not in g]  # no group ACL
    grant(secured, *producer_acls(topic), *grants)
    publish(secured, topic, [next(e for e in mixed_events(10) if e.topic == "orders")])
    handlers = Handlers()

    @handlers.on(*ALL)
    def handle(event: Event, ctx: MessageContext) -> None:
        return None

    with pytest.raises(GroupAuthorizationError) as info:
        ConsumerRunner(
            group,
            handlers,
            topics=[topic],
            kafka=secured.kafka(),
            registry=RegistrySettings(url=secured.registry_url),
            settings=settings,
        ).run(until_idle_s=15)
    OUTPUTS.append(str(info.value))
    assert info.value.resource == group
    assert f"not authorized to READ consumer group {group!r}" in str(info.value)


def test_missing_dead_letter_acl_keeps_the_record_and_stops(secured: Secured) -> None:
    topic = new_topic(secured)
    group = f"g-{uuid.uuid4().hex[:8]}"
    settings = ConsumerSettings.model_validate(FAST_RETRY)
    for spec in failure_topic_specs(group, {topic: 2}, settings):
        new_topic(secured, 2, spec.name)
    grants = [g for g in consumer_acls(group, topic, settings) if g.get("topic") != f"{topic}.dlq"]
    dlq_visible = {"topic": f"{topic}.dlq", "operations": ["describe"]}  # seen, but not writable
    grant(secured, *producer_acls(topic), *grants, dlq_visible)
    [delivered] = publish(secured, topic, [next(e for e in mixed_events(10) if e.topic == "orders")])
    handlers = Handlers()

    @handlers.on(*ALL)
    def handle(event: Event, ctx: MessageContext) -> None:
        raise DeadLetter("poison")

    with pytest.raises(TopicAuthorizationError) as info:
        ConsumerRunner(
            group,
            handlers,
            topics=[topic],
            kafka=secured.kafka(),
            registry=RegistrySettings(url=secured.registry_url),
            settings=settings,
        ).run(until_idle_s=15)
    OUTPUTS.append(str(info.value))
    assert info.value.topic == f"{topic}.dlq"
    assert info.value.operation == "WRITE"
    # Not committed past the record: a restart with the ACL in place handles it again.
    assert committed(secured, group, topic, 2)[delivered.partition] <= delivered.offset
    assert sum(end_offsets(secured, f"{topic}.dlq")) == 0


# ---------------------------------------------------------------------------- secrets never shown


def test_no_password_in_any_output_log_or_help(secured: Secured) -> None:
    for args in (("stack", "up", "--help"), ("topics", "apply", "--help"), ("publish", "--help")):
        cli(*args, env=secured.env())
    cli("stack", "up", "--data-dir", str(secured.data_dir), env={})
    cli("stack", "status", "--data-dir", str(secured.data_dir), "-o", "json", env={})
    logs = [
        p.read_text(errors="replace")
        for pattern in ("node-*/logs/*.log", "node-*/node.out", "registry/registry.out")
        for p in secured.data_dir.glob(pattern)
    ]
    assert len(logs) >= 3
    text = "\n".join(OUTPUTS + logs)
    assert len(OUTPUTS) > 20
    for name, password in secured.passwords.items():
        assert password not in text, f"the {name} password appears in an output"
