"""Shared fixtures: a real broker + registry for the session, a fresh topic per test.

The broker is chosen in this order (see README, Tests):
1. ``EVSTREAM_TEST_BOOTSTRAP_SERVERS`` (and ``EVSTREAM_TEST_REGISTRY_URL``) when set;
2. else testcontainers (Kafka + Apicurio images) when a Docker engine answers;
3. else the local JVM stack: the one running in ``EVSTREAM_STACK_DIR`` (``make test`` starts it),
   or a private one started for this session and stopped at its end.

Steps 1 and 3 are the ``evstream_stack`` plugin's own (evstream.testing.plugin), reused here.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient

from evstream.testing.plugin import StackEndpoints, environment_endpoints, local_stack_endpoints
from tests.helpers import wait_until
from tests.kafka_helpers import end_offsets

if TYPE_CHECKING:
    from tests.stream_helpers import StreamApp


Endpoints = StackEndpoints  # where the session's broker and registry listen, and who provided them


def _docker_answers() -> bool:
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker  # noqa: PLC0415 - optional, only when no broker was given

        client = docker.from_env(timeout=2)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def _testcontainers() -> Iterator[Endpoints]:
    from testcontainers.community.kafka import KafkaContainer  # noqa: PLC0415
    from testcontainers.core.container import DockerContainer  # noqa: PLC0415

    # cp-kafka 8.1 is Apache Kafka 4.1 in KRaft mode, the same broker the local stack runs.
    with (
        KafkaContainer("confluentinc/cp-kafka:8.1.0").with_kraft() as kafka,
        DockerContainer("apicurio/apicurio-registry:3.3.3").with_exposed_ports(8080) as registry,
    ):
        host, port = registry.get_container_host_ip(), registry.get_exposed_port(8080)
        yield Endpoints(
            kafka.get_bootstrap_server(), f"http://{host}:{port}/apis/ccompat/v7", "testcontainers"
        )


@pytest.fixture(scope="session")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    """The session's real broker and registry (see the module docstring for the order)."""
    found = environment_endpoints()
    if found is not None:
        yield found
        return
    if _docker_answers():
        yield from _testcontainers()
        return
    yield from local_stack_endpoints(tmp_path_factory)


@pytest.fixture
def registry(endpoints: Endpoints) -> Iterator[SchemaRegistryClient]:
    """A confluent-kafka SchemaRegistryClient on the session's registry."""
    assert endpoints.registry_url, f"no registry URL for this session ({endpoints.source})"
    with SchemaRegistryClient({"url": endpoints.registry_url}) as client:
        yield client


@pytest.fixture
def admin(endpoints: Endpoints) -> AdminClient:
    return AdminClient({"bootstrap.servers": endpoints.bootstrap_servers})


TopicFactory = Callable[..., str]


@pytest.fixture
def new_topic(
    admin: AdminClient, endpoints: Endpoints, request: pytest.FixtureRequest
) -> Iterator[TopicFactory]:
    """Create fresh, uniquely named topics for this test; delete them afterwards."""
    created: list[str] = []

    def make(
        partitions: int = 3,
        replication_factor: int = -1,
        config: dict[str, str] | None = None,
        name: str = "",
    ) -> str:
        test_name = request.node.name[:40].strip("_").replace("[", "-").replace("]", "")
        name = name or f"t-{test_name}-{uuid.uuid4().hex[:8]}"
        futures = admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    config=config or {},
                )
            ]
        )
        futures[name].result(timeout=30)

        def ready() -> bool:
            meta = admin.list_topics(name, timeout=5).topics.get(name)
            return (
                meta is not None
                and meta.error is None
                and len(meta.partitions) == partitions
                and all(p.leader >= 0 for p in meta.partitions.values())
            )

        wait_until(ready, timeout=30, what=f"topic {name} with a leader for every partition")
        end_offsets(endpoints.bootstrap_servers, name)  # every leader answers, not just listed
        created.append(name)
        return name

    yield make
    if created:
        for future in admin.delete_topics(created, request_timeout=30).values():
            future.result(timeout=30)


@pytest.fixture
def topic(new_topic: TopicFactory) -> str:
    """One fresh 3-partition topic."""
    return new_topic()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its folder: tests/unit -> unit, tests/integration -> integration, ..."""
    for item in items:
        for kind in ("unit", "integration", "reliability"):
            if f"/tests/{kind}/" in str(item.path):
                item.add_marker(getattr(pytest.mark, kind))


@pytest.fixture
def stream_app(
    endpoints: Endpoints, new_topic: TopicFactory, repo_root: Path, tmp_path: Path
) -> Iterator[StreamApp]:
    """The demo stream app on fresh topics; its worker processes are stopped afterwards."""
    from tests.stream_helpers import StreamApp  # noqa: PLC0415 - faust loads only for stream tests

    app = StreamApp.create(endpoints, new_topic, repo_root, tmp_path)
    try:
        yield app
    finally:
        app.stop_all()
