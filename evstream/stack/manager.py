"""Start, inspect and stop a local Kafka (KRaft) + Apicurio Registry stack as plain JVM processes.

Nothing here needs Docker: jars come from Maven Central (see :mod:`evstream.stack.jars`), every
process listens on loopback ports, and everything lives under one data dir that the caller owns.

The stack is durable. The first ``up`` formats KRaft storage once and records what it made in
``cluster.json``; every later ``up`` restarts that same cluster (same cluster id, topics,
records, offsets) and the registry replays its schemas from the stack's own Kafka (Apicurio's
``kafkasql`` storage, as Confluent keeps ``_schemas``), so schema ids survive too. ``up`` after a
partial crash starts only the processes that died. Wiping is explicit: :meth:`LocalStack.reset`
or ``down(purge=True)``. ``stack.json`` records the running processes, so a later ``status`` or
``down`` (from another process) finds exactly those pids and nothing else.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import re
import shutil
import signal
import string
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import httpx
from confluent_kafka.admin import AdminClient, ClusterMetadata

from evstream.errors import (
    ConfigError,
    PortInUseError,
    StackError,
    StackNotRunningError,
    StackStartError,
    StackTimeoutError,
)
from evstream.stack import jars, processes, security
from evstream.stack.java import KAFKA_MIN_JAVA, REGISTRY_MIN_JAVA, find_java
from evstream.stack.state import (
    CLUSTER_FILE,
    STATE_FILE,
    ClusterRecord,
    NodeRecord,
    NodeState,
    RegistryState,
    StackState,
)

__all__ = ["LAYOUT", "REGISTRY_TOPICS", "LocalStack", "ProcessStatus", "admin_config", "default_data_dir"]

#: Version of the on-disk layout ``up`` writes; another layout is refused (``stack reset`` wipes it).
#: 1 was the layout before cluster.json (in-memory registry, storage reformatted at every ``up``).
LAYOUT = 2
#: The registry's kafkasql topics (``__`` prefix: hidden by ``topics list`` unless ``--internal``).
REGISTRY_TOPICS = (
    "__evstream_registry_journal",
    "__evstream_registry_snapshots",
    "__evstream_registry_events",
)

_LOCK = ".lock"
_MARKER = ".evstream-stack"
_KAFKA_HEAP = ["-Xms256m", "-Xmx512m"]
_REGISTRY_HEAP = ["-Xms128m", "-Xmx512m"]
_PORT_GRACE_S = 10.0
#: Longest a readiness probe waits for one node's metadata answer (capped by the start deadline).
_PROBE_TIMEOUT_S = 2.0
_RESET_HINT = "wipe it with `evstream stack reset`"
_KAFKA_JAR = re.compile(r"^kafka_\d+\.\d+-(\d+\.\d+\.\d+)\.jar$")


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

    ``start_timeout`` bounds how long ``up`` waits for readiness (every node answers an Admin
    metadata call on its own listener, and each answer lists every node; the registry's API
    answers); ``stop_timeout`` is how long ``down`` waits after SIGTERM before SIGKILL. After
    ``up``, :attr:`notices` says what differed from last time (a port that was taken, processes
    that were restarted).
    """

    def __init__(
        self, data_dir: Path | None = None, *, start_timeout: float = 120.0, stop_timeout: float = 30.0
    ) -> None:
        # resolve(): `up` and `down` must agree on the path that marks our processes.
        self.data_dir = (data_dir or default_data_dir()).resolve()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.notices: list[str] = []

    # ------------------------------------------------------------------ public API

    def up(
        self,
        *,
        nodes: int | None = None,
        port: int | None = None,
        registry: bool = True,
        registry_port: int | None = None,
        secure: bool = False,
    ) -> StackState:
        """Start the stack (or return the one already running here) and wait until it is ready.

        ``nodes`` defaults to what the data dir was formatted with (1 for a new one). A stopped
        stack restarts with its data; a partly running one gets only its dead processes back.
        ``secure`` formats a new stack with SASL_SSL, SCRAM users and ACLs (see
        :mod:`evstream.stack.security`); a secured data dir always restarts secured.
        """
        _check_options(nodes=nodes, port=port, registry=registry, registry_port=registry_port)
        self.notices = []
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            running = self._running_state()
            if secure and running is not None and not running.secure:
                raise StackError(
                    f"the stack running in {self.data_dir} is not secured; --secure applies only to a "
                    f"new data dir ({_RESET_HINT}, or choose another --data-dir)"
                )
            if running is not None and (registry is False or running.registry is not None):
                if nodes is not None and len(running.nodes) != nodes:
                    raise StackError(
                        f"a {len(running.nodes)}-node stack is already running in {self.data_dir}; "
                        f"use --nodes {len(running.nodes)}, or `evstream stack reset` to wipe it first"
                    )
                return running
            return self._start(
                nodes=nodes, port=port, registry=registry, registry_port=registry_port, secure=secure
            )

    def status(self) -> list[ProcessStatus]:
        """Each recorded process and whether it runs. Raises when nothing runs here."""
        state = self._load_state()
        if state is None:
            if self._load_record() is not None:
                raise StackNotRunningError(
                    f"the stack in {self.data_dir} is stopped (its data is kept); "
                    "start it with `evstream stack up`"
                )
            raise StackNotRunningError(
                f"no stack is running in {self.data_dir} (nothing recorded); "
                "start one with `evstream stack up`"
            )
        rows = self._rows(state)
        if not any(row.alive for row in rows):
            raise StackNotRunningError(
                f"the stack in {self.data_dir} is not running (its processes are gone; its data is kept); "
                "start it with `evstream stack up`"
            )
        return rows

    def state(self) -> StackState:
        """The recorded state of a running stack; raises :class:`StackNotRunningError` otherwise."""
        state = self._running_state()
        if state is None:
            rows = self.status()  # raises with the precise reason when nothing runs
            dead = ", ".join(row.name for row in rows if not row.alive)
            raise StackNotRunningError(
                f"the stack in {self.data_dir} is partly down ({dead} not running); "
                "`evstream stack up` restarts what died"
            )
        return state

    def down(self, *, purge: bool = False) -> list[ProcessStatus]:
        """Stop every process this stack started (SIGTERM, then SIGKILL after ``stop_timeout``).

        The data stays: the next ``up`` restarts the same cluster. ``purge=True`` also wipes it
        (as :meth:`reset`) and does not complain when nothing was running.
        """
        with self._lock():
            state = self._load_state(tolerant=purge)
            rows = [] if state is None else [row for row in self._rows(state) if row.alive]
            if not rows and not purge:
                self.status()  # raises with the precise reason
            if state is not None:
                self._stop_all(state)
                (self.data_dir / STATE_FILE).unlink(missing_ok=True)
            if purge:
                self._wipe()
        return rows

    def reset(self) -> list[ProcessStatus]:
        """Stop whatever runs here and wipe the stack's data (topics, records, offsets, schemas).

        Only the entries ``up`` makes are removed; a folder holding anything else is refused.
        Returns the processes that were stopped.
        """
        return self.down(purge=True) if self.data_dir.is_dir() else []

    def restart(self) -> StackState:
        """Stop every process (keeping the data) and start the same stack again."""
        record = self._load_record()
        state = self._load_state()
        if record is None and state is None:
            raise StackNotRunningError(
                f"no stack in {self.data_dir} (nothing recorded); start one with `evstream stack up`"
            )
        with self._lock():
            if state is not None:
                self._stop_all(state)
                (self.data_dir / STATE_FILE).unlink(missing_ok=True)
        with_registry = state.registry is not None if state is not None else True
        return self.up(registry=with_registry)

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
        _check_formatted(node, state.cluster_id)
        java = find_java(KAFKA_MIN_JAVA, env_var="EVSTREAM_JAVA_HOME", purpose="Kafka 4.1")
        state = self._replace_node(state, self._spawn_node(java, state, node))
        state.save()
        self._wait_kafka(state, time.monotonic() + self.start_timeout)

    # ------------------------------------------------------------------ start

    def _start(
        self,
        *,
        nodes: int | None,
        port: int | None,
        registry: bool,
        registry_port: int | None,
        secure: bool = False,
    ) -> StackState:
        record = self._load_record()
        previous = self._load_state()
        if record is not None and record.formatted:
            _check_record(record, self.data_dir, nodes)
            if secure and not record.secure:
                raise StackError(
                    f"the stack in {self.data_dir} was formatted without --secure; {_RESET_HINT} "
                    "(or choose another --data-dir) to make a secured one"
                )
        elif record is None:
            self._refuse_legacy_or_foreign(previous)
        for wanted in (port, registry_port):
            if wanted is not None and not self._port_is_ours(wanted, previous):
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
        kafka_version = _kafka_version(libs)

        if record is None or not record.formatted:  # a new stack, or a first format that was cut short
            if previous is not None:  # never orphan processes of an interrupted first `up`
                self._stop_all(previous)
            self._clear_storage()
            record, state = self._plan_new(
                nodes or 1, port, registry_home, registry_port, libs, kafka_version, secure=secure
            )
            record.save(self.data_dir)
            if secure:
                security.create_material(
                    self.data_dir / security.SECURITY_DIR, [n.node_id for n in record.nodes]
                )
            for node in state.nodes:
                self._render_config(state, node)
                self._format(kafka_java, state, node)
            record = record.model_copy(update={"formatted": True})
            record.save(self.data_dir)
            return self._bring_up(state, None, kafka_java, registry_java, fresh=True)
        else:
            if kafka_version != record.kafka_version:
                _check_kafka_version(record, kafka_version, self.data_dir)
                record = record.model_copy(update={"kafka_version": kafka_version})
            record, state = self._plan_restart(record, previous, port, registry_home, registry_port, libs)
            record.save(self.data_dir)
        return self._bring_up(state, previous, kafka_java, registry_java, fresh=False)

    def _bring_up(
        self,
        state: StackState,
        previous: StackState | None,
        kafka_java: Path,
        registry_java: Path | None,
        *,
        fresh: bool,
    ) -> StackState:
        """Start every process of ``state`` that has no live pid, then wait until all are ready."""
        (self.data_dir / _MARKER).write_text(
            "made by `evstream stack up`; `evstream stack reset` wipes this folder\n"
        )
        started: list[int] = []
        deadline = time.monotonic() + self.start_timeout
        try:
            for node in state.nodes:
                if node.pid is None:
                    if not fresh:
                        _check_formatted(node, state.cluster_id)
                    if previous is not None:
                        self.notices.append(f"kafka-{node.node_id} was not running: started it with its data")
                    self._render_config(state, node)
                    spawned = self._spawn_node(kafka_java, state, node)
                    started.append(spawned.pid or 0)
                    state = self._replace_node(state, spawned)
                    state.save()
            self._wait_kafka(state, deadline)
            if state.registry is not None and state.registry.pid is None and registry_java is not None:
                if previous is not None and previous.registry is not None:
                    self.notices.append("the registry was not running: started it (it replays its schemas)")
                reg = self._spawn_registry(registry_java, state.registry, state.bootstrap_servers, state)
                started.append(reg.pid or 0)
                state = state.model_copy(update={"registry": reg})
                state.save()
            if state.registry is not None:
                self._wait_registry(state, deadline)
        except BaseException:
            self._stop_pids(started)
            survivors = self._survivors(state)
            if survivors is None:
                (self.data_dir / STATE_FILE).unlink(missing_ok=True)
            else:
                survivors.save()
            raise
        return state

    def _plan_new(
        self,
        nodes: int,
        port: int | None,
        registry_home: Path | None,
        registry_port: int | None,
        libs: Path,
        kafka_version: str,
        *,
        secure: bool = False,
    ) -> tuple[ClusterRecord, StackState]:
        fixed = [p for p in (port, registry_port) if p is not None]
        pool = iter(processes.free_ports(2 * nodes + 2, exclude=fixed))
        node_records = tuple(
            NodeRecord(
                node_id=index + 1,
                port=port if index == 0 and port is not None else next(pool),
                controller_port=next(pool),
            )
            for index in range(nodes)
        )
        record = ClusterRecord(
            layout=LAYOUT,
            evstream_version=_evstream_version(),
            kafka_version=kafka_version,
            cluster_id=_cluster_id(),
            nodes=node_records,
            registry_port=registry_port if registry_port is not None else next(pool),
            registry_management_port=next(pool),
            secure=secure,
        )
        return record, self._state_for(record, libs, registry_home, {}, None)

    def _plan_restart(
        self,
        record: ClusterRecord,
        previous: StackState | None,
        port: int | None,
        registry_home: Path | None,
        registry_port: int | None,
        libs: Path,
    ) -> tuple[ClusterRecord, StackState]:
        """Reuse the recorded ports (and live processes); pick new ports only for taken ones."""
        alive: dict[int, int] = {}
        reg_pid: int | None = None
        if previous is not None:
            alive = {n.node_id: n.pid for n in previous.nodes if n.pid is not None and self._owns(n.pid)}
            if previous.registry is not None and self._owns(previous.registry.pid):
                reg_pid = previous.registry.pid
        if previous is not None and alive and not self._same_ports(previous, record):
            raise StackError(
                f"stack.json and cluster.json in {self.data_dir} disagree on the ports of running nodes; "
                "stop it with `evstream stack down`, then `evstream stack up`"
            )
        recorded = {p for n in record.nodes for p in (n.port, n.controller_port)}
        recorded |= {p for p in (record.registry_port, record.registry_management_port) if p is not None}
        taken = set(recorded)

        def reuse(what: str, wanted: int, *, explicit: bool = False, fixed: bool = False) -> int:
            try:
                # A killed JVM's threads may still be closing its sockets for a moment after the
                # pid looks dead: give our own recorded port a few seconds before replacing it.
                processes.wait_free(wanted, timeout=_PORT_GRACE_S if wanted in recorded else 0)
            except PortInUseError:
                if explicit or fixed:
                    raise
                new = processes.free_ports(1, exclude=taken)[0]
                taken.add(new)
                self.notices.append(f"port {wanted} ({what}) is taken by another process: now on {new}")
                return new
            return wanted

        new_nodes = []
        for node in record.nodes:
            if node.node_id in alive:
                new_nodes.append(node)
                continue
            wanted = port if node.node_id == 1 and port is not None else node.port
            new_port = reuse(f"kafka-{node.node_id}", wanted, explicit=node.node_id == 1 and port is not None)
            # Static voters: a controller port can only move when no peer runs with the old one.
            controller = reuse(f"kafka-{node.node_id} controller", node.controller_port, fixed=bool(alive))
            new_nodes.append(node.model_copy(update={"port": new_port, "controller_port": controller}))
        update: dict[str, object] = {"nodes": tuple(new_nodes)}
        if registry_home is not None and reg_pid is None:
            if registry_port is not None:
                update["registry_port"] = reuse("registry", registry_port, explicit=True)
            elif record.registry_port is not None:
                update["registry_port"] = reuse("registry", record.registry_port)
            else:
                update["registry_port"] = processes.free_ports(1, exclude=taken)[0]
            mgmt = record.registry_management_port
            update["registry_management_port"] = (
                reuse("registry management", mgmt)
                if mgmt is not None
                else processes.free_ports(1, exclude=taken)[0]
            )
        record = record.model_copy(update=update)
        return record, self._state_for(record, libs, registry_home, alive, reg_pid)

    def _state_for(
        self,
        record: ClusterRecord,
        libs: Path,
        registry_home: Path | None,
        alive: dict[int, int],
        reg_pid: int | None,
    ) -> StackState:
        node_states = []
        for node in record.nodes:
            node_dir = self.data_dir / f"node-{node.node_id}"
            node_states.append(
                NodeState(
                    node_id=node.node_id,
                    port=node.port,
                    controller_port=node.controller_port,
                    pid=alive.get(node.node_id),
                    config_file=node_dir / "server.properties",
                    log_dir=node_dir / "data",
                    stdout_file=node_dir / "node.out",
                )
            )
        registry_state = None
        if registry_home is not None and record.registry_port is not None:
            registry_state = RegistryState(
                port=record.registry_port,
                management_port=record.registry_management_port or 0,
                pid=reg_pid,
                home=registry_home,
                stdout_file=self.data_dir / "registry" / "registry.out",
            )
        return StackState(
            data_dir=self.data_dir,
            cluster_id=record.cluster_id,
            kafka_libs=libs,
            nodes=tuple(node_states),
            registry=registry_state,
            security_dir=self.data_dir / security.SECURITY_DIR if record.secure else None,
        )

    @staticmethod
    def _same_ports(state: StackState, record: ClusterRecord) -> bool:
        return [(n.node_id, n.port, n.controller_port) for n in state.nodes] == [
            (n.node_id, n.port, n.controller_port) for n in record.nodes
        ]

    def _port_is_ours(self, port: int, previous: StackState | None) -> bool:
        """True if one of our live processes already listens on ``port`` (``up`` will keep it)."""
        if previous is None:
            return False
        for node in previous.nodes:
            if port in (node.port, node.controller_port) and self._owns(node.pid):
                return True
        reg = previous.registry
        return reg is not None and port in (reg.port, reg.management_port) and self._owns(reg.pid)

    def _refuse_legacy_or_foreign(self, previous: StackState | None) -> None:
        """A data dir without cluster.json must be new (or ours and empty), never reformatted."""
        if any(self.data_dir.glob("node-*/data/meta.properties")):
            raise StackError(
                f"{self.data_dir} holds a stack made by an older evstream (stack layout 1: "
                f"no cluster.json, schemas not kept); {_RESET_HINT}"
            )
        foreign = [p.name for p in self.data_dir.iterdir() if p.name not in (_LOCK, _MARKER)]
        if foreign and previous is None and not (self.data_dir / _MARKER).exists():
            raise StackError(
                f"{self.data_dir} is not empty and holds no evstream stack; choose an empty or new --data-dir"
            )

    def _clear_storage(self) -> None:
        """Remove node and registry folders before a first format (only called without formatted data)."""
        for entry in self.data_dir.glob("node-*"):
            shutil.rmtree(entry, ignore_errors=True)
        shutil.rmtree(self.data_dir / "registry", ignore_errors=True)
        shutil.rmtree(self.data_dir / security.SECURITY_DIR, ignore_errors=True)

    def _wipe(self) -> None:
        """Delete everything ``up`` made here (the explicit reset); refuse a folder that is not ours."""
        known = {_LOCK, _MARKER, STATE_FILE, CLUSTER_FILE, "stack.tmp", "cluster.tmp", "registry"}
        known.add(security.SECURITY_DIR)
        entries = list(self.data_dir.iterdir()) if self.data_dir.is_dir() else []
        ours = (self.data_dir / _MARKER).exists() or (self.data_dir / CLUSTER_FILE).exists()
        foreign = [p.name for p in entries if p.name not in known and not p.name.startswith("node-")]
        if any(p.name != _LOCK for p in entries) and (foreign or not ours):
            raise StackError(
                f"{self.data_dir} does not look like an evstream stack "
                f"(it holds {', '.join(sorted(foreign)) or 'no marker'}); nothing was deleted"
            )
        for entry in entries:
            if entry.name == _LOCK:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)

    def _render_config(self, state: StackState, node: NodeState) -> None:
        node.config_file.parent.mkdir(parents=True, exist_ok=True)
        template_name = "single-node.properties" if len(state.nodes) == 1 else "cluster-node.properties"
        template = string.Template((jars.deploy_dir() / "kafka" / template_name).read_text())
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in state.nodes)
        text = template.substitute(
            node_id=node.node_id,
            voters=voters,
            port=node.port,
            controller_port=node.controller_port,
            log_dir=node.log_dir,
        )
        if state.security_dir is None:
            node.config_file.write_text(text)
            return
        found = security.load_secrets(state.security_dir)
        overlay = string.Template((jars.deploy_dir() / "kafka" / "secure.properties").read_text()).substitute(
            port=node.port,
            controller_port=node.controller_port,
            admin_user=security.ADMIN_USER,
            admin_password=found.admin_password,
            keystore=found.keystore(node.node_id),
            keystore_password=found.keystore_password,
            ca_file=found.ca_file,
            super_users=";".join(
                [f"User:{security.ADMIN_USER}", *(security.node_principal(n.node_id) for n in state.nodes)]
            ),
        )
        # The config holds the admin's and the keystore's passwords: owner-only, like secrets.json.
        security.write_secret(node.config_file, _overlay(text, overlay))

    def _format(self, java: Path, state: StackState, node: NodeState) -> None:
        """Format one node's storage: only ever for a new stack (``meta.properties`` absent)."""
        cmd = [str(java), "-Xmx256m", "-cp", f"{state.kafka_libs}/*", "kafka.tools.StorageTool", "format"]
        cmd += [f"--cluster-id={state.cluster_id}", "-c", str(node.config_file)]
        if state.security_dir is not None:  # SCRAM users live in the metadata log, made at format time
            found = security.load_secrets(state.security_dir)
            for user, password in (
                (security.ADMIN_USER, found.admin_password),
                (security.APP_USER, found.app_password),
            ):
                cmd += ["--add-scram", f"{security.MECHANISM}=[name={user},password={password}]"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        except subprocess.TimeoutExpired as exc:
            raise StackStartError(f"formatting kafka-{node.node_id} storage took over 120s") from exc
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            if state.security_dir is not None:
                tail = security.redact(tail, state.security_dir)
            raise StackStartError(
                f"formatting kafka-{node.node_id} storage failed (exit {proc.returncode})", log_tail=tail
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

    def _spawn_registry(
        self, java: Path, reg: RegistryState, bootstrap: str, state: StackState
    ) -> RegistryState:
        processes.require_free(reg.port)
        reg.stdout_file.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        for line in (jars.deploy_dir() / "registry" / "registry.env").read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                env[key.strip()] = value.strip()
        env["QUARKUS_HTTP_PORT"] = str(reg.port)
        env["QUARKUS_MANAGEMENT_PORT"] = str(reg.management_port)
        env["APICURIO_KAFKASQL_BOOTSTRAP_SERVERS"] = bootstrap
        if state.security_dir is not None:
            # kafkasql connects to the secured listener as the admin (it creates its own topics).
            # The JAAS line holds a password: it goes in an owner-only file named by
            # QUARKUS_CONFIG_LOCATIONS, not in the environment or on the command line.
            conf = reg.stdout_file.parent / "kafkasql-secure.properties"
            security.write_secret(conf, security.registry_kafka_properties(state.security_dir))
            env["QUARKUS_CONFIG_LOCATIONS"] = f"file:{conf}"
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

    def _wait_kafka(self, state: StackState, deadline: float) -> None:
        """Wait until every node answers on its own listener and each answer lists every node.

        One bootstrap-everything metadata call is not enough: after a SIGKILL the controller keeps
        the dead broker registered (and listed by every survivor) until its session times out, so
        the survivors' stale metadata would pass while the restarted node does not listen yet.
        """
        self._wait(state, deadline, "kafka", lambda: _kafka_pending(state, deadline))

    def _wait_registry(self, state: StackState, deadline: float) -> None:
        reg = state.registry
        if reg is not None:
            self._wait(
                state,
                deadline,
                "registry",
                lambda: None if _registry_up(reg.url) else "its API does not answer",
            )

    def _wait(self, state: StackState, deadline: float, what: str, pending: Callable[[], str | None]) -> None:
        """Poll ``pending`` (None = ready, else what is missing) until ``deadline``, checking the pids."""
        while True:
            self._check_alive(state)
            missing = pending()
            if missing is None:
                return
            if time.monotonic() > deadline:
                raise StackTimeoutError(
                    f"{what} not ready after {self.start_timeout:.0f}s ({missing}); "
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
            pids.insert(0, state.registry.pid)  # the registry first: it writes to Kafka
        self._stop_pids([pid for pid in pids if pid is not None])

    def _stop_pids(self, pids: list[int]) -> None:
        ours = [pid for pid in pids if self._owns(pid)]
        for pid in ours:  # signal all first so the nodes shut down in parallel
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in ours:
            processes.terminate(pid, marker=self._marker_arg, timeout=self.stop_timeout)

    def _survivors(self, state: StackState) -> StackState | None:
        """``state`` keeping only pids that still run, or None when none does."""
        nodes = tuple(n if self._owns(n.pid) else n.model_copy(update={"pid": None}) for n in state.nodes)
        reg = state.registry
        if reg is not None and not self._owns(reg.pid):
            reg = reg.model_copy(update={"pid": None})
        if not any(n.pid for n in nodes) and (reg is None or reg.pid is None):
            return None
        return state.model_copy(update={"nodes": nodes, "registry": reg})

    # ------------------------------------------------------------------ helpers

    @property
    def _marker_arg(self) -> str:
        """A JVM system property on every process we start; `down` signals only pids that carry it."""
        return f"-Devstream.stack={self.data_dir}"

    def _owns(self, pid: int | None) -> bool:
        return pid is not None and processes.owns(pid, self._marker_arg)

    def _rows(self, state: StackState) -> list[ProcessStatus]:
        rows = [
            ProcessStatus(f"kafka-{n.node_id}", n.pid, self._owns(n.pid), n.bootstrap) for n in state.nodes
        ]
        if state.registry is not None:
            reg = state.registry
            rows.append(ProcessStatus("registry", reg.pid, self._owns(reg.pid), reg.url))
        return rows

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise `up`, `down` and `reset` on one data dir across processes."""
        if not self.data_dir.is_dir():
            yield
            return
        with (self.data_dir / _LOCK).open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _load_state(self, *, tolerant: bool = False) -> StackState | None:
        try:
            return StackState.load(self.data_dir)
        except ValueError as exc:  # pydantic ValidationError and JSON errors are ValueErrors
            if tolerant:
                return None
            raise StackError(
                f"{self.data_dir / STATE_FILE} is unreadable; remove it ({exc.__class__.__name__})"
            ) from exc

    def _load_record(self) -> ClusterRecord | None:
        try:
            return ClusterRecord.load(self.data_dir)
        except ValueError as exc:
            raise StackError(
                f"{self.data_dir / CLUSTER_FILE} is unreadable or from an incompatible evstream "
                f"({exc.__class__.__name__}); {_RESET_HINT}"
            ) from exc

    def _load_or_raise(self) -> StackState:
        state = self._load_state()
        if state is None:
            self.status()  # raises with the precise reason
            raise StackNotRunningError(f"no stack is running in {self.data_dir}")
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


def _check_options(*, nodes: int | None, port: int | None, registry: bool, registry_port: int | None) -> None:
    if nodes not in (None, 1, 3):
        raise ConfigError(f"--nodes must be 1 or 3, not {nodes}")
    if registry_port is not None and not registry:
        raise ConfigError("--registry-port makes no sense with --no-registry")
    if port is not None and port == registry_port:
        raise ConfigError(f"--port and --registry-port are both {port}")


def _check_record(record: ClusterRecord, data_dir: Path, nodes: int | None) -> None:
    """Refuse (one line naming ``stack reset``) what this evstream cannot restart as recorded."""
    if record.layout != LAYOUT:
        newer = record.layout > LAYOUT
        raise StackError(
            f"{data_dir} was made by {'a newer' if newer else 'an older'} evstream "
            f"(stack layout {record.layout}; this one uses {LAYOUT}); "
            f"{'upgrade evstream or ' if newer else ''}{_RESET_HINT}"
        )
    if record.registry_storage != "kafkasql":
        raise StackError(
            f"{data_dir} keeps schemas in {record.registry_storage!r} storage, not kafkasql; {_RESET_HINT}"
        )
    if nodes is not None and nodes != len(record.nodes):
        have = len(record.nodes)
        raise StackError(
            f"the stack in {data_dir} was formatted with {have} node{'s' if have > 1 else ''}, not {nodes}; "
            f"run `evstream stack up --nodes {have}`, or {_RESET_HINT}"
        )


def _check_kafka_version(record: ClusterRecord, current: str, data_dir: Path) -> None:
    """Patch releases may differ; another major.minor of Kafka is refused."""
    if "unknown" in (record.kafka_version, current):
        return
    if record.kafka_version.split(".")[:2] != current.split(".")[:2]:
        raise StackError(
            f"{data_dir} was formatted by Kafka {record.kafka_version}, this evstream runs Kafka {current}; "
            f"{_RESET_HINT}"
        )


def _check_formatted(node: NodeState, cluster_id: str) -> None:
    """A recorded node must still have its formatted storage of this cluster: never reformat it."""
    meta = node.log_dir / "meta.properties"
    try:
        text = meta.read_text()
    except OSError as exc:
        raise StackError(
            f"kafka-{node.node_id} has no formatted storage in {node.log_dir} (its data is gone); "
            f"{_RESET_HINT}"
        ) from exc
    found = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    if found.get("cluster.id", cluster_id) != cluster_id:
        raise StackError(
            f"kafka-{node.node_id} storage in {node.log_dir} belongs to cluster {found['cluster.id']}, "
            f"not {cluster_id}; {_RESET_HINT}"
        )


def _kafka_version(libs: Path) -> str:
    for jar in libs.glob("kafka_*.jar"):
        match = _KAFKA_JAR.match(jar.name)
        if match:
            return match.group(1)
    return "unknown"


def _evstream_version() -> str:
    try:
        return metadata.version("evstream")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def _cluster_id() -> str:
    """A KRaft cluster id (base64url of a UUID) that does not start with '-' (Kafka's own rule)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def admin_config(state: StackState) -> dict[str, str]:
    """librdkafka settings for the stack's admin: bootstrap only, or SASL_SSL as the admin user."""
    conf = {"bootstrap.servers": state.bootstrap_servers}
    if state.security_dir is not None:
        conf |= security.client_properties(state.security_dir, security.ADMIN_USER)
    return conf


def _overlay(base: str, overlay: str) -> str:
    """``base`` properties with every key ``overlay`` sets replaced by the overlay's lines."""
    keys = {
        line.split("=", 1)[0].strip()
        for line in overlay.splitlines()
        if "=" in line and not line.startswith("#")
    }
    kept = [
        line
        for line in base.splitlines()
        if line.startswith("#") or line.split("=", 1)[0].strip() not in keys
    ]
    return "\n".join(kept) + "\n" + overlay


def _kafka_pending(state: StackState, deadline: float) -> str | None:
    """None when every node is ready, else what the first node that is not ready lacks.

    Each node is asked with a client bootstrapped to that node's listener alone: the client knows
    no other address until that node has answered a metadata request, so a success proves the
    node serves clients (a just-killed node still listed in a survivor's stale metadata does not
    count). librdkafka may route the call itself to a broker it just learnt about, so
    ``orig_broker_id`` is not checked. Every answer must list every node at its recorded port.
    """
    expected = {node.node_id: node.port for node in state.nodes}
    base = admin_config(state)
    for node in state.nodes:
        timeout = min(_PROBE_TIMEOUT_S, deadline - time.monotonic())
        if timeout <= 0:
            return f"kafka-{node.node_id} not asked before the deadline"
        meta = _node_metadata(base | {"bootstrap.servers": node.bootstrap}, timeout)
        if meta is None:
            return f"kafka-{node.node_id} does not answer on {node.bootstrap}"
        seen = {broker_id: broker.port for broker_id, broker in meta.brokers.items()}
        if seen != expected:
            missing = sorted(set(expected) - set(seen))
            return f"kafka-{node.node_id} lists brokers {sorted(seen)}" + (
                f" (not yet {missing})" if missing else f", ports {seen} instead of {expected}"
            )
    return None


def _node_metadata(conf: dict[str, str], timeout: float) -> ClusterMetadata | None:
    """A metadata answer within ``timeout`` seconds through the one broker ``conf`` names, or None."""
    timeout = max(timeout, 0.1)
    admin = AdminClient(
        conf
        | {
            "log_level": 0,
            "socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000)),
            "socket.timeout.ms": max(1000, int(timeout * 1000)),
        }
    )
    try:
        return admin.list_topics(timeout=timeout)
    except Exception:
        return None


def _registry_up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/subjects", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
