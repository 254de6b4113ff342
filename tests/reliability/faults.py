"""Fault injection on private stacks: signals to broker and registry pids, topics, reading back.

Every fault is a real signal to a real process this test started (SIGSTOP/SIGCONT pause, SIGKILL
crash, SIGTERM clean stop); nothing is mocked. The session's shared stack is never touched.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from evstream.errors import PortInUseError
from evstream.stack import LocalStack
from evstream.testing.plugin import StackEndpoints
from tests.helpers import wait_until
from tests.kafka_helpers import end_offsets


@dataclass
class Private:
    """A private stack this test session owns (and may break)."""

    stack: LocalStack

    @functools.cached_property
    def endpoints(self) -> StackEndpoints:
        """Its endpoints (the ports stay the same across restarts of its processes)."""
        state = self.stack.state()
        return StackEndpoints(state.bootstrap_servers, state.registry_url or "", "private")

    @property
    def registry_pid(self) -> int:
        registry = self.stack.state().registry
        assert registry is not None
        assert registry.pid is not None
        return registry.pid

    def node_pid(self, node_id: int) -> int:
        pid = self.stack.state().node(node_id).pid
        assert pid is not None
        return pid

    def topic(
        self,
        prefix: str,
        partitions: int = 3,
        replication_factor: int = -1,
        config: dict[str, str] | None = None,
    ) -> str:
        """A fresh topic with a leader for every partition."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": self.endpoints.bootstrap_servers})
        admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    config=config or {},
                )
            ]
        )[name].result(timeout=30)
        end_offsets(self.endpoints.bootstrap_servers, name)  # every leader answers
        return name

    def restart_dead(self) -> None:
        """Start again whatever died (``up`` restarts only dead processes) and wait until ready."""
        self.stack.up()


@contextlib.contextmanager
def paused(pid: int) -> Iterator[None]:
    """SIGSTOP ``pid`` for the block (SIGCONT on the way out, whatever happens)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def kill(pid: int, sig: signal.Signals = signal.SIGKILL, *, timeout: float = 60) -> None:
    """Send ``sig`` to ``pid`` and wait until the process is gone."""
    os.kill(pid, sig)

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        return False

    wait_until(gone, timeout=timeout, what=f"pid {pid} to exit after {sig.name}")


def leader_of(admin: AdminClient, topic: str, partition: int = 0) -> int:
    """The node leading ``topic[partition]`` (waits while there is none)."""

    def ask() -> int | None:
        try:
            meta = admin.list_topics(topic, timeout=5).topics[topic].partitions[partition]
        except (KafkaException, KeyError):
            return None
        return meta.leader if meta.leader >= 0 else None

    return wait_until(ask, timeout=60, what=f"a leader for {topic}[{partition}]")


def full_isr(admin: AdminClient, topic: str, replicas: int = 3) -> bool:
    """Every partition of ``topic`` has ``replicas`` in sync."""
    try:
        parts = admin.list_topics(topic, timeout=5).topics[topic].partitions.values()
    except KafkaException:
        return False
    return all(len(p.isrs) == replicas for p in parts)


def start_again(stack: LocalStack, node: int) -> None:
    """Start ``node`` again; a port taken meanwhile by some client's ephemeral port is waited out."""

    def started() -> bool:
        try:
            stack.start_node(node)
        except PortInUseError:
            return False
        return True

    wait_until(started, timeout=120, what=f"kafka-{node} started again", interval=2.0)


def replicated_topic(stack: LocalStack, prefix: str, partitions: int) -> tuple[AdminClient, str]:
    """Start whatever an earlier scenario left dead, then a fresh topic on the 3-node ``stack``
    (RF 3, min ISR 2) with every replica in sync; the admin client and the topic's name."""
    stack.up()
    admin = AdminClient({"bootstrap.servers": stack.state().bootstrap_servers})
    topic = f"{prefix}-{uuid.uuid4().hex[:6]}"
    config = {"min.insync.replicas": "2"}
    admin.create_topics([NewTopic(topic, partitions, replication_factor=3, config=config)])[topic].result(30)
    wait_until(lambda: full_isr(admin, topic), timeout=60, what=f"full ISR of {topic}")
    return admin, topic
