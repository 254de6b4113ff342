"""What a local stack is made of, persisted in its data dir.

Two files, with different lifetimes:

* ``cluster.json`` (:class:`ClusterRecord`) is durable: what was formatted (cluster id, node
  count, versions, the stack layout) and the ports last used. It is written once at the first
  ``up`` and removed only by ``stack reset`` / ``down --purge``.
* ``stack.json`` (:class:`StackState`) describes the processes of a running stack (pids, ports,
  files). ``up`` writes it, ``down`` removes it; the data stays.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from evstream.errors import StackError

__all__ = [
    "CLUSTER_FILE",
    "STATE_FILE",
    "ClusterRecord",
    "NodeRecord",
    "NodeState",
    "RegistryState",
    "StackState",
]

STATE_FILE = "stack.json"
CLUSTER_FILE = "cluster.json"


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


class NodeState(BaseModel):
    """One KRaft node (broker + controller)."""

    model_config = ConfigDict(frozen=True)

    node_id: int
    port: int
    controller_port: int
    pid: int | None = None
    config_file: Path
    log_dir: Path
    stdout_file: Path

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:<port>`` of this broker."""
        return f"127.0.0.1:{self.port}"


class RegistryState(BaseModel):
    """The Apicurio Registry process."""

    model_config = ConfigDict(frozen=True)

    port: int
    management_port: int
    pid: int | None = None
    home: Path
    stdout_file: Path

    @property
    def url(self) -> str:
        """Confluent-compatible API base URL, as confluent-kafka's SchemaRegistryClient wants it."""
        return f"http://127.0.0.1:{self.port}/apis/ccompat/v7"


class StackState(BaseModel):
    """Everything ``stack status`` and ``stack down`` need to find what ``stack up`` started."""

    model_config = ConfigDict(frozen=True)

    data_dir: Path
    cluster_id: str
    kafka_libs: Path
    nodes: tuple[NodeState, ...]
    registry: RegistryState | None = None
    #: ``<data dir>/security`` of a stack made with ``up --secure`` (SASL_SSL + ACLs), else None.
    security_dir: Path | None = None

    @property
    def secure(self) -> bool:
        """True for a stack made with ``up --secure``."""
        return self.security_dir is not None

    @property
    def bootstrap_servers(self) -> str:
        """Comma-separated bootstrap servers of every node."""
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def registry_url(self) -> str | None:
        """The registry's ccompat URL, or None without a registry."""
        return self.registry.url if self.registry else None

    def node(self, node_id: int) -> NodeState:
        """The node with ``node_id``; :class:`StackError` if there is none."""
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise StackError(f"no node {node_id} in the stack at {self.data_dir}")

    def save(self) -> None:
        """Write ``stack.json`` atomically."""
        _write_atomically(self.data_dir / STATE_FILE, self.model_dump_json(indent=2))

    @classmethod
    def load(cls, data_dir: Path) -> StackState | None:
        """Read ``stack.json``, or None when there is none (raises ValueError when malformed)."""
        path = data_dir / STATE_FILE
        if not path.exists():
            return None
        return cls.model_validate_json(path.read_text())


class NodeRecord(BaseModel):
    """The durable identity of one node: its id and the ports it last listened on."""

    model_config = ConfigDict(frozen=True)

    node_id: int
    port: int
    controller_port: int


class ClusterRecord(BaseModel):
    """What ``up`` formatted in a data dir (``cluster.json``); ``up`` reuses it, never reformats it."""

    model_config = ConfigDict(frozen=True)

    layout: int
    evstream_version: str
    kafka_version: str
    cluster_id: str
    nodes: tuple[NodeRecord, ...]
    formatted: bool = False  # False while the first format runs: an interrupted one starts over
    registry_storage: str = "kafkasql"
    secure: bool = False  # made with `up --secure`: SASL_SSL, SCRAM users, ACLs (fixed at format time)
    registry_port: int | None = None
    registry_management_port: int | None = None

    def save(self, data_dir: Path) -> None:
        """Write ``cluster.json`` atomically."""
        _write_atomically(data_dir / CLUSTER_FILE, self.model_dump_json(indent=2))

    @classmethod
    def load(cls, data_dir: Path) -> ClusterRecord | None:
        """Read ``cluster.json``, or None when there is none (raises ValueError when malformed)."""
        path = data_dir / CLUSTER_FILE
        if not path.exists():
            return None
        return cls.model_validate_json(path.read_text())
