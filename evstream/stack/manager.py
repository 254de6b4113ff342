"""Start, inspect and stop a local Kafka (KRaft) + Apicurio Registry stack as plain JVM processes.

Nothing here needs Docker: jars come from Maven Central (see :mod:`evstream.stack.jars`), every
process listens on loopback ports chosen at start, and everything lives under one data dir
that the caller owns. ``stack.json`` in that dir records what was started, so a later
``status`` or ``down`` (from another process) finds exactly those pids and nothing else.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import shutil
import signal
import string
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from confluent_kafka.admin import AdminClient

from evstream.errors import ConfigError, StackError, StackNotRunningError, StackStartError, StackTimeoutError
from evstream.stack import jars, processes
from evstream.stack.java import KAFKA_MIN_JAVA, REGISTRY_MIN_JAVA, find_java
from evstream.stack.state import STATE_FILE, NodeState, RegistryState, StackState

__all__ = ["LocalStack", "ProcessStatus", "default_data_dir"]

_LOCK = ".lock"
_MARKER = ".evstream-stack"
_KAFKA_HEAP = ["-Xms256m", "-Xmx512m"]
_REGISTRY_HEAP = ["-Xms128m", "-Xmx512m"]


def default_data_dir() -> Path:
    """``EVSTREAM_STACK_DIR``, else ``$XDG_STATE_HOME/evstream/stack``."""
    override = os.environ.get("EVSTREAM_STACK_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "evstream" / "stack"


@dataclass(frozen=True)
class ProcessStatus:
    """One recorded process and whether it still runs."""

    name: str
    pid: int | None
    alive: bool
    endpoint: str


class LocalStack:
    """A local stack rooted at ``data_dir``. Constructing it does no I/O.

    ``start_timeout`` bounds how long ``up`` waits for readiness (Admin metadata answers with
    every broker; the registry's API answers); ``stop_timeout`` is how long ``down`` waits after
    SIGTERM before SIGKILL.
    """

    def __init__(
        self, data_dir: Path | None = None, *, start_timeout: float = 120.0, stop_timeout: float = 30.0
    ) -> None:
        # resolve(): `up` and `down` must agree on the path that marks our processes.
        self.data_dir = (data_dir or default_data_dir()).resolve()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout

    # ------------------------------------------------------------------ public API

    def up(
        self,
        *,
        nodes: int = 1,
        port: int | None = None,
        registry: bool = True,
        registry_port: int | None = None,
    ) -> StackState:
        """Start the stack (or return the one already running here) and wait until it is ready."""
        _check_options(nodes=nodes, port=port, registry=registry, registry_port=registry_port)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            running = self._running_state()
            if running is not None:
                if len(running.nodes) != nodes or (registry and running.registry is None):
                    raise StackError(
                        f"a {len(running.nodes)}-node stack is already running in {self.data_dir}; "
                        "run `evstream stack down` first"
                    )
                return running
            return self._start(nodes=nodes, port=port, registry=registry, registry_port=registry_port)

    def _start(
        self, *, nodes: int, port: int | None, registry: bool, registry_port: int | None
    ) -> StackState:
        for wanted in (port, registry_port):
            if wanted is not None:
                processes.require_free(wanted)
        kafka_java = find_java(KAFKA_MIN_JAVA, env_var="EVSTREAM_JAVA_HOME", purpose="Kafka 4.1")
        registry_java = (
            find_java(
                REGISTRY_MIN_JAVA,
                env_var="EVSTREAM_REGISTRY_JAVA_HOME",
                purpose="Apicurio Registry 3.3",
                scan_jvm_dirs=True,  # the default java is often 17; a newer JDK may sit beside it
            )
            if registry
            else None
        )
        libs = jars.resolve_kafka()
        registry_home = jars.resolve_registry() if registry else None

        self._clear_previous()
        (self.data_dir / _MARKER).write_text("made by `evstream stack up`; `stack up` may wipe this folder\n")
        state = self._plan(nodes, port, registry_home, registry_port, libs)
        try:
            for node in state.nodes:
                self._format(kafka_java, state, node)
            for node in state.nodes:
                state = self._replace_node(state, self._spawn_node(kafka_java, state, node))
                state.save()
            if state.registry is not None and registry_java is not None:
                state = state.model_copy(
                    update={"registry": self._spawn_registry(registry_java, state.registry)}
                )
                state.save()
            self._wait_ready(state)
        except BaseException:
            self._stop_all(state)
            (self.data_dir / STATE_FILE).unlink(missing_ok=True)
            raise
        return state

    def status(self) -> list[ProcessStatus]:
        """Each recorded process and whether it runs. Raises when nothing was started here."""
        state = self._load_or_raise()
        rows = [
            ProcessStatus(f"kafka-{n.node_id}", n.pid, self._owns(n.pid), n.bootstrap) for n in state.nodes
        ]
        if state.registry is not None:
            reg = state.registry
            rows.append(ProcessStatus("registry", reg.pid, self._owns(reg.pid), reg.url))
        if not any(row.alive for row in rows):
            raise StackNotRunningError(
                f"the stack in {self.data_dir} is not running (its processes are gone); "
                "start it with `evstream stack up`"
            )
        return rows

    def state(self) -> StackState:
        """The recorded state of a running stack; raises :class:`StackNotRunningError` otherwise."""
        state = self._running_state()
        if state is None:
            self.status()  # raises with the precise reason
            raise StackNotRunningError(f"no running stack in {self.data_dir}")
        return state

    def down(self) -> list[ProcessStatus]:
        """Stop every process this stack started (SIGTERM, then SIGKILL after ``stop_timeout``)."""
        rows = self.status()
        with self._lock():
            self._stop_all(self._load_or_raise())
            (self.data_dir / STATE_FILE).unlink(missing_ok=True)
        return [row for row in rows if row.alive]

    def stop_node(self, node_id: int, *, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop one broker (SIGKILL for a hard crash, SIGTERM for a clean shutdown) and wait for it."""
        node = self._load_or_raise().node(node_id)
        if node.pid is not None and self._owns(node.pid):
            processes.terminate(node.pid, marker=self._marker_arg, timeout=self.stop_timeout, sig=sig)

    def start_node(self, node_id: int) -> None:
        """Start a stopped broker again with its existing data and wait until the cluster sees it."""
        state = self._load_or_raise()
        node = state.node(node_id)
        if node.pid is not None and self._owns(node.pid):
            raise StackError(f"kafka-{node_id} is already running (pid {node.pid})")
        java = find_java(KAFKA_MIN_JAVA, env_var="EVSTREAM_JAVA_HOME", purpose="Kafka 4.1")
        state = self._replace_node(state, self._spawn_node(java, state, node))
        state.save()
        self._wait_ready(state)

    # ------------------------------------------------------------------ planning and start

    def _plan(
        self, nodes: int, port: int | None, registry_home: Path | None, registry_port: int | None, libs: Path
    ) -> StackState:
        fixed = [p for p in (port, registry_port) if p is not None]
        pool = iter(processes.free_ports(2 * nodes + 2, exclude=fixed))
        broker_ports = [port if index == 0 and port is not None else next(pool) for index in range(nodes)]
        node_states = []
        for index in range(nodes):
            node_dir = self.data_dir / f"node-{index + 1}"
            node_states.append(
                NodeState(
                    node_id=index + 1,
                    port=broker_ports[index],
                    controller_port=next(pool),
                    config_file=node_dir / "server.properties",
                    log_dir=node_dir / "data",
                    stdout_file=node_dir / "node.out",
                )
            )
        registry_state = None
        if registry_home is not None:
            registry_state = RegistryState(
                port=registry_port if registry_port is not None else next(pool),
                management_port=next(pool),
                home=registry_home,
                stdout_file=self.data_dir / "registry" / "registry.out",
            )
        cluster_id = _cluster_id()
        return StackState(
            data_dir=self.data_dir,
            cluster_id=cluster_id,
            kafka_libs=libs,
            nodes=tuple(node_states),
            registry=registry_state,
        )

    def _clear_previous(self) -> None:
        """Stop leftovers of an earlier stack here, then remove its files (only in a folder we made)."""
        previous = self._load_state()
        if previous is not None:  # some of its processes may still run: never orphan them
            self._stop_all(previous)
        foreign = [p.name for p in self.data_dir.iterdir() if p.name not in (_LOCK, _MARKER)]
        if foreign and previous is None and not (self.data_dir / _MARKER).exists():
            raise StackError(
                f"{self.data_dir} is not empty and holds no evstream stack; choose an empty or new --data-dir"
            )
        for entry in self.data_dir.glob("node-*"):
            shutil.rmtree(entry, ignore_errors=True)
        shutil.rmtree(self.data_dir / "registry", ignore_errors=True)
        (self.data_dir / STATE_FILE).unlink(missing_ok=True)

    def _format(self, java: Path, state: StackState, node: NodeState) -> None:
        node.config_file.parent.mkdir(parents=True, exist_ok=True)
        template_name = "single-node.properties" if len(state.nodes) == 1 else "cluster-node.properties"
        template = string.Template((jars.deploy_dir() / "kafka" / template_name).read_text())
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in state.nodes)
        node.config_file.write_text(
            template.substitute(
                node_id=node.node_id,
                voters=voters,
                port=node.port,
                controller_port=node.controller_port,
                log_dir=node.log_dir,
            )
        )
        cmd = [str(java), "-Xmx256m", "-cp", f"{state.kafka_libs}/*", "kafka.tools.StorageTool", "format"]
        cmd += [f"--cluster-id={state.cluster_id}", "-c", str(node.config_file)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        except subprocess.TimeoutExpired as exc:
            raise StackStartError(f"formatting kafka-{node.node_id} storage took over 120s") from exc
        if proc.returncode != 0:
            raise StackStartError(
                f"formatting kafka-{node.node_id} storage failed (exit {proc.returncode})",
                log_tail="\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:]),
            )

    def _spawn_node(self, java: Path, state: StackState, node: NodeState) -> NodeState:
        for port in (node.port, node.controller_port):
            processes.require_free(port)
        logs = node.config_file.parent / "logs"
        logs.mkdir(exist_ok=True)
        cmd = [str(java), *_KAFKA_HEAP, self._marker_arg, "-XX:+UseG1GC", "-Djava.awt.headless=true"]
        cmd += [
            f"-Dkafka.logs.dir={logs}",
            f"-Dlog4j2.configurationFile={jars.deploy_dir() / 'kafka' / 'log4j2.properties'}",
        ]
        cmd += ["-cp", f"{state.kafka_libs}/*", "kafka.Kafka", str(node.config_file)]
        pid = processes.spawn(cmd, env=dict(os.environ), output=node.stdout_file)
        return node.model_copy(update={"pid": pid})

    def _spawn_registry(self, java: Path, reg: RegistryState) -> RegistryState:
        processes.require_free(reg.port)
        reg.stdout_file.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        for line in (jars.deploy_dir() / "registry" / "registry.env").read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                env[key.strip()] = value.strip()
        env["QUARKUS_HTTP_PORT"] = str(reg.port)
        env["QUARKUS_MANAGEMENT_PORT"] = str(reg.management_port)
        cmd = [
            str(java),
            *_REGISTRY_HEAP,
            self._marker_arg,
            "-jar",
            str(reg.home / "quarkus-run.jar"),
        ]
        pid = processes.spawn(cmd, env=env, output=reg.stdout_file)
        return reg.model_copy(update={"pid": pid})

    # ------------------------------------------------------------------ readiness and stop

    def _wait_ready(self, state: StackState) -> None:
        deadline = time.monotonic() + self.start_timeout
        checks: list[tuple[str, Callable[[], bool]]] = [
            ("kafka", lambda: _brokers_up(state.bootstrap_servers) >= len(state.nodes))
        ]
        if state.registry is not None:
            url = state.registry.url
            checks.append(("registry", lambda: _registry_up(url)))
        pending = dict(checks)
        while pending:
            self._check_alive(state)
            for name, check in list(pending.items()):
                if check():
                    del pending[name]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise StackTimeoutError(
                    f"{' and '.join(pending)} not ready after {self.start_timeout:.0f}s; "
                    f"logs are in {self.data_dir}"
                )
            time.sleep(0.25)

    def _check_alive(self, state: StackState) -> None:
        for node in state.nodes:
            if node.pid is not None and not processes.is_alive(node.pid):
                raise StackStartError(
                    f"kafka-{node.node_id} (port {node.port}) exited while starting; last log lines:",
                    log_tail=processes.log_tail(
                        node.stdout_file, node.config_file.parent / "logs" / "server.log"
                    ),
                )
        reg = state.registry
        if reg is not None and reg.pid is not None and not processes.is_alive(reg.pid):
            raise StackStartError(
                f"the schema registry (port {reg.port}) exited while starting; last log lines:",
                log_tail=processes.log_tail(reg.stdout_file),
            )

    def _stop_all(self, state: StackState) -> None:
        pids = [n.pid for n in state.nodes]
        if state.registry is not None:
            pids.append(state.registry.pid)
        ours = [pid for pid in pids if pid is not None and self._owns(pid)]
        for pid in ours:  # signal all first so the nodes shut down in parallel
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in ours:
            processes.terminate(pid, marker=self._marker_arg, timeout=self.stop_timeout)

    # ------------------------------------------------------------------ helpers

    @property
    def _marker_arg(self) -> str:
        """A JVM system property on every process we start; `down` signals only pids that carry it."""
        return f"-Devstream.stack={self.data_dir}"

    def _owns(self, pid: int | None) -> bool:
        return pid is not None and processes.owns(pid, self._marker_arg)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise `up` and `down` on one data dir across processes."""
        if not self.data_dir.is_dir():
            yield
            return
        with (self.data_dir / _LOCK).open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _load_state(self) -> StackState | None:
        try:
            return StackState.load(self.data_dir)
        except ValueError as exc:  # pydantic ValidationError and JSON errors are ValueErrors
            raise StackError(
                f"{self.data_dir / STATE_FILE} is unreadable; remove it ({exc.__class__.__name__})"
            ) from exc

    def _load_or_raise(self) -> StackState:
        state = self._load_state()
        if state is None:
            raise StackNotRunningError(
                f"no stack is running in {self.data_dir} (nothing recorded); "
                "start one with `evstream stack up`"
            )
        return state

    def _running_state(self) -> StackState | None:
        state = self._load_state()
        if state is None:
            return None
        if all(self._owns(n.pid) for n in state.nodes) and (
            state.registry is None or self._owns(state.registry.pid)
        ):
            return state
        return None

    @staticmethod
    def _replace_node(state: StackState, node: NodeState) -> StackState:
        nodes = tuple(node if n.node_id == node.node_id else n for n in state.nodes)
        return state.model_copy(update={"nodes": nodes})


def _check_options(*, nodes: int, port: int | None, registry: bool, registry_port: int | None) -> None:
    if nodes not in (1, 3):
        raise ConfigError(f"--nodes must be 1 or 3, not {nodes}")
    if registry_port is not None and not registry:
        raise ConfigError("--registry-port makes no sense with --no-registry")
    if port is not None and port == registry_port:
        raise ConfigError(f"--port and --registry-port are both {port}")


def _cluster_id() -> str:
    """A KRaft cluster id (base64url of a UUID) that does not start with '-' (Kafka's own rule)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _brokers_up(bootstrap: str) -> int:
    admin = AdminClient(
        {"bootstrap.servers": bootstrap, "log_level": 0, "socket.connection.setup.timeout.ms": 2000}
    )
    try:
        return len(admin.list_topics(timeout=2).brokers)
    except Exception:
        return 0


def _registry_up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/subjects", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
