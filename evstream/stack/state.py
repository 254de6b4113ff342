"""What a running local stack is made of, persisted as ``stack.json`` in its data dir."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from evstream.errors import StackError

__all__ = ["NodeState", "RegistryState", "StackState"]

STATE_FILE = "stack.json"


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

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def registry_url(self) -> str | None:
        return self.registry.url if self.registry else None

    def node(self, node_id: int) -> NodeState:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise StackError(f"no node {node_id} in the stack at {self.data_dir}")

    def save(self) -> None:
        path = self.data_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, data_dir: Path) -> StackState | None:
        path = data_dir / STATE_FILE
        if not path.exists():
            return None
        return cls.model_validate_json(path.read_text())
