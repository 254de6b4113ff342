"""Stack manager paths that need no broker: tool discovery, jar cache, bad input, start failures.

Fake ``java``/``mvn`` scripts stand in for the tools here to exercise *our* error handling
(a JVM that dies or hangs, Maven that fails); the real stack is covered by the integration tests.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from evstream import (
    DependencyResolutionError,
    StackError,
    StackNotRunningError,
    StackStartError,
    StackTimeoutError,
    ToolNotFoundError,
)
from evstream.stack import LocalStack, find_java, java_version, resolve_kafka
from evstream.stack.manager import _cluster_id
from tests.helpers import one_line_error, run_cli

JAVA_HEADER = """#!/bin/sh
case "$*" in
  *-version*) echo 'openjdk version "{version}" 2023-10-17' >&2; exit 0;;
  *StorageTool*) exit 0;;
esac
"""
FAKE_MVN = """#!/bin/sh
echo run >> "{count}"
for a in "$@"; do
  case "$a" in
    -DoutputDirectory=*) d="${{a#-DoutputDirectory=}}"; /bin/mkdir -p "$d"; : > "$d/fake.jar";;
  esac
done
"""


def script(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def bare_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH with only an empty bin dir; no JAVA_HOME; a private cache. Returns that bin dir."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("EVSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("JAVA_HOME", "EVSTREAM_JAVA_HOME", "EVSTREAM_REGISTRY_JAVA_HOME"):
        monkeypatch.delenv(var, raising=False)
    java_version.cache_clear()
    return bin_dir


@pytest.mark.parametrize(
    ("printed", "major"), [("17.0.15", 17), ("1.8.0_292", 8), ("25.0.3", 25), ("21", 21)]
)
def test_java_version_parsing(bare_env: Path, printed: str, major: int) -> None:
    java = script(bare_env, "java", JAVA_HEADER.format(version=printed))
    assert java_version(java) == major


def test_old_java_is_refused_with_the_version_found(bare_env: Path) -> None:
    script(bare_env, "java", JAVA_HEADER.format(version="17.0.2"))
    with pytest.raises(ToolNotFoundError, match=r"Registry needs Java 21\+ but only found .*java is 17"):
        find_java(21, env_var="X_JAVA_HOME", purpose="Registry")


def test_env_var_home_wins(bare_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script(bare_env, "java", JAVA_HEADER.format(version="17.0.2"))
    newer = script(tmp_path / "jdk25" / "bin", "java", JAVA_HEADER.format(version="25.0.1"))
    monkeypatch.setenv("X_JAVA_HOME", str(tmp_path / "jdk25"))
    assert find_java(21, env_var="X_JAVA_HOME", purpose="Registry") == newer


def test_cli_without_java_exits_with_one_line(bare_env: Path, tmp_path: Path) -> None:
    proc = run_cli("stack", "up", "--data-dir", str(tmp_path / "stack"), "--no-registry")
    assert proc.returncode == 1
    line = one_line_error(proc)
    assert line.startswith("error: java not found: Kafka 4.1 needs Java 17+")
    assert not (tmp_path / "stack" / "stack.json").exists()


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_cli_port_in_use_exits_with_one_line(tmp_path: Path, taken_port: int) -> None:
    for flag in ("--port", "--registry-port"):
        proc = run_cli("stack", "up", "--data-dir", str(tmp_path / "stack"), flag, str(taken_port))
        assert proc.returncode == 1
        assert one_line_error(proc) == (
            f"error: port {taken_port} on 127.0.0.1 is already in use; pick another or omit it"
        )
    assert not (tmp_path / "stack" / "stack.json").exists()


@pytest.mark.parametrize("command", ["down", "status"])
def test_cli_down_and_status_with_nothing_running(tmp_path: Path, command: str) -> None:
    proc = run_cli("stack", command, "--data-dir", str(tmp_path / "empty"))
    assert proc.returncode == 1
    assert one_line_error(proc) == (
        f"error: no stack is running in {tmp_path / 'empty'} (nothing recorded); "
        "start one with `evstream stack up`"
    )


def test_warm_cache_runs_no_maven(bare_env: Path, tmp_path: Path) -> None:
    count = tmp_path / "mvn-runs"
    script(bare_env, "mvn", FAKE_MVN.format(count=count))
    first = resolve_kafka()
    assert (first / "fake.jar").is_file()
    assert count.read_text().count("run") == 1
    (bare_env / "mvn").unlink()  # a second resolution must not need Maven at all
    assert resolve_kafka() == first
    assert count.read_text().count("run") == 1


def test_cold_cache_without_maven(bare_env: Path) -> None:
    with pytest.raises(ToolNotFoundError, match="mvn not found on PATH"):
        resolve_kafka()


def test_maven_failure_is_reported_and_leaves_no_partial_cache(bare_env: Path, tmp_path: Path) -> None:
    script(
        bare_env, "mvn", "#!/bin/sh\necho '[ERROR] Failed to execute goal: Could not resolve kafka'\nexit 1\n"
    )
    with pytest.raises(
        DependencyResolutionError, match=r"\[ERROR\] Failed to execute goal: Could not resolve kafka"
    ):
        resolve_kafka()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []


def fake_stack(bare_env: Path, tmp_path: Path, body: str) -> LocalStack:
    script(bare_env, "mvn", FAKE_MVN.format(count=tmp_path / "mvn-runs"))
    script(bare_env, "java", JAVA_HEADER.format(version="17.0.9") + body)
    return LocalStack(tmp_path / "stack", start_timeout=3, stop_timeout=5)


def ours(marker: Path) -> list[int]:
    """Pids whose command line mentions ``marker``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(marker) in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def test_broker_dying_at_start_reports_its_last_log_lines(bare_env: Path, tmp_path: Path) -> None:
    stack = fake_stack(
        bare_env, tmp_path, "echo 'ERROR Exiting Kafka due to fatal exception: boom'\nexit 1\n"
    )
    with pytest.raises(StackStartError, match=r"kafka-1 \(port \d+\) exited while starting") as info:
        stack.up(registry=False)
    assert "Exiting Kafka due to fatal exception: boom" in info.value.log_tail
    assert not (tmp_path / "stack" / "stack.json").exists()


def test_cli_broker_dying_prints_one_error_line_then_the_log(bare_env: Path, tmp_path: Path) -> None:
    fake_stack(bare_env, tmp_path, "echo 'ERROR fatal: boom'\nexit 1\n")
    proc = run_cli("stack", "up", "--data-dir", str(tmp_path / "stack"), "--no-registry", "--timeout", "20")
    assert proc.returncode == 1
    assert "exited while starting; last log lines:" in one_line_error(proc)
    assert "ERROR fatal: boom" in proc.stderr


def test_start_timeout_kills_what_it_started(bare_env: Path, tmp_path: Path) -> None:
    stack = fake_stack(bare_env, tmp_path, "while true; do /bin/sleep 0.1; done\n")
    with pytest.raises(StackTimeoutError, match="kafka not ready after 3s"):
        stack.up(registry=False)
    assert ours(tmp_path / "stack") == []
    with pytest.raises(StackNotRunningError):
        stack.status()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "2"], "--nodes must be 1 or 3, not 2"),
        (["--no-registry", "--registry-port", "8081"], "--registry-port makes no sense with --no-registry"),
        (["--port", "9092", "--registry-port", "9092"], "--port and --registry-port are both 9092"),
    ],
)
def test_bad_up_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run_cli("stack", "up", "--data-dir", str(tmp_path), *args)
    assert proc.returncode == 2
    assert one_line_error(proc) == f"error: {message}"
    assert os.listdir(tmp_path) == []


def test_up_refuses_a_folder_it_did_not_make(bare_env: Path, tmp_path: Path) -> None:
    stack = fake_stack(bare_env, tmp_path, "exit 1\n")
    precious = tmp_path / "stack" / "registry" / "precious.txt"
    precious.parent.mkdir(parents=True)
    precious.write_text("keep me")
    with pytest.raises(StackError, match="is not empty and holds no evstream stack"):
        stack.up(registry=False)
    assert precious.read_text() == "keep me"


def test_cluster_ids_never_start_with_a_dash() -> None:
    ids = {_cluster_id() for _ in range(3000)}
    assert len(ids) == 3000
    assert not any(i.startswith("-") for i in ids)
    assert all(len(i) == 22 for i in ids)


def node_entry(data_dir: Path, node_id: int, pid: int) -> dict[str, object]:
    node_dir = data_dir / f"node-{node_id}"
    return {
        "node_id": node_id,
        "port": 1000 + node_id,
        "controller_port": 2000 + node_id,
        "pid": pid,
        "config_file": str(node_dir / "server.properties"),
        "log_dir": str(node_dir / "data"),
        "stdout_file": str(node_dir / "node.out"),
    }


def test_down_signals_only_processes_carrying_its_marker(tmp_path: Path) -> None:
    data_dir = (tmp_path / "stack").resolve()
    data_dir.mkdir()
    sleeper = "import time; time.sleep(120)"
    # One process we "started" (it carries the stack's marker argument) and one stranger whose
    # pid got recorded (a recycled pid), plus one that merely mentions the path in a longer argument.
    ours = subprocess.Popen([sys.executable, "-c", sleeper, f"-Devstream.stack={data_dir}"])
    stranger = subprocess.Popen([sys.executable, "-c", sleeper])
    lookalike = subprocess.Popen([sys.executable, "-c", sleeper, f"-Devstream.stack={data_dir}2"])
    try:
        state = {
            "data_dir": str(data_dir),
            "cluster_id": "x",
            "kafka_libs": str(tmp_path),
            "nodes": [
                node_entry(data_dir, 1, ours.pid),
                node_entry(data_dir, 2, stranger.pid),
                node_entry(data_dir, 3, lookalike.pid),
            ],
        }
        (data_dir / "stack.json").write_text(json.dumps(state))
        proc = run_cli("stack", "down", "--data-dir", str(data_dir), "--timeout", "10")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[0] == "stopped kafka-1"
        assert ours.wait(timeout=10) is not None
        assert stranger.poll() is None
        assert lookalike.poll() is None
        assert not (data_dir / "stack.json").exists()
    finally:
        for child in (ours, stranger, lookalike):
            child.kill()
            child.wait()


def formatted_dir(tmp_path: Path, **changes: object) -> Path:
    """A data dir as a first ``up`` leaves it (cluster.json + meta.properties), with ``changes``."""
    data_dir = tmp_path / "stack"
    meta = data_dir / "node-1" / "data" / "meta.properties"
    meta.parent.mkdir(parents=True)
    meta.write_text("cluster.id=abc\nnode.id=1\nversion=1\n")
    (data_dir / ".evstream-stack").write_text("made by evstream\n")
    record = {
        "layout": 2,
        "evstream_version": "0.1.0",
        "kafka_version": "4.1.1",
        "cluster_id": "abc",
        "nodes": [{"node_id": 1, "port": 1001, "controller_port": 2001}],
        "formatted": True,
    } | changes
    (data_dir / "cluster.json").write_text(json.dumps(record))
    return data_dir


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"layout": 9},
            "was made by a newer evstream (stack layout 9; this one uses 2); upgrade evstream or",
        ),
        ({"layout": 1}, "was made by an older evstream (stack layout 1; this one uses 2);"),
        ({"registry_storage": "mem"}, "keeps schemas in 'mem' storage, not kafkasql;"),
        (
            {"nodes": [{"node_id": i, "port": 1000 + i, "controller_port": 2000 + i} for i in (1, 2, 3)]},
            "was formatted with 3 nodes, not 1; run `evstream stack up --nodes 3`, or",
        ),
    ],
)
def test_up_refuses_an_incompatible_data_dir_without_touching_it(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    data_dir = formatted_dir(tmp_path, **changes)
    proc = run_cli("stack", "up", "--data-dir", str(data_dir), "--nodes", "1", "--no-registry")
    assert proc.returncode == 1
    line = one_line_error(proc)
    assert message in line
    assert line.endswith("wipe it with `evstream stack reset`")
    assert (data_dir / "node-1" / "data" / "meta.properties").read_text().startswith("cluster.id=abc")


def test_up_refuses_a_stack_of_the_previous_layout(tmp_path: Path) -> None:
    data_dir = formatted_dir(tmp_path)
    (data_dir / "cluster.json").unlink()  # the old layout: formatted storage, no cluster.json
    proc = run_cli("stack", "up", "--data-dir", str(data_dir), "--no-registry")
    assert proc.returncode == 1
    assert one_line_error(proc) == (
        f"error: {data_dir} holds a stack made by an older evstream (stack layout 1: no cluster.json, "
        "schemas not kept); wipe it with `evstream stack reset`"
    )
    assert (data_dir / "node-1" / "data" / "meta.properties").exists()


def test_a_node_without_its_storage_is_never_reformatted(bare_env: Path, tmp_path: Path) -> None:
    stack = fake_stack(bare_env, tmp_path, "exit 1\n")
    data_dir = formatted_dir(tmp_path)
    (data_dir / "node-1" / "data" / "meta.properties").unlink()
    with pytest.raises(StackError, match=r"kafka-1 has no formatted storage in .* wipe it with `evstream"):
        stack.up(registry=False)


def test_stopped_stack_status_down_and_wiping(tmp_path: Path) -> None:
    data_dir = formatted_dir(tmp_path)
    status = run_cli("stack", "status", "--data-dir", str(data_dir))
    assert status.returncode == 1
    assert one_line_error(status) == (
        f"error: the stack in {data_dir} is stopped (its data is kept); start it with `evstream stack up`"
    )
    refused = run_cli("stack", "reset", "--data-dir", str(data_dir))  # no TTY, no --yes
    assert refused.returncode == 2
    assert one_line_error(refused) == f"error: refusing to wipe {data_dir} without confirmation; pass --yes"
    assert (data_dir / "cluster.json").exists()
    wiped = run_cli("stack", "down", "--purge", "--data-dir", str(data_dir))
    assert wiped.returncode == 0, wiped.stderr
    assert sorted(p.name for p in data_dir.iterdir()) == [".lock"]
    again = run_cli("stack", "reset", "--yes", "--data-dir", str(data_dir))
    assert again.returncode == 0, again.stderr


def test_reset_refuses_a_folder_that_is_not_a_stack(tmp_path: Path) -> None:
    precious = tmp_path / "stack" / "notes.txt"
    precious.parent.mkdir()
    precious.write_text("keep me")
    with pytest.raises(StackError, match=r"does not look like an evstream stack .*nothing was deleted"):
        LocalStack(tmp_path / "stack").reset()
    assert precious.read_text() == "keep me"


def test_cli_has_restart_reset_and_node_commands() -> None:
    proc = run_cli("stack", "--help", env={"COLUMNS": "200"})
    assert proc.returncode == 0
    for command in ("up", "down", "status", "reset", "restart", "node", "fetch"):
        assert command in proc.stdout
    node = run_cli("stack", "node", "--help", env={"COLUMNS": "200"})
    assert "start" in node.stdout
    assert "stop" in node.stdout
