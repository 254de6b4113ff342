"""Small process and port helpers for the local stack (Linux/macOS, loopback only)."""

from __future__ import annotations

import os
import random
import signal
import socket
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from evstream.errors import PortInUseError

__all__ = [
    "ephemeral_range",
    "free_ports",
    "is_alive",
    "log_tail",
    "owns",
    "require_free",
    "spawn",
    "terminate",
    "wait_free",
]

LOOPBACK = "127.0.0.1"


def require_free(port: int) -> None:
    """Raise :class:`PortInUseError` unless ``port`` can be bound on loopback now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            raise PortInUseError(port) from exc


def wait_free(port: int, *, timeout: float) -> None:
    """Like :func:`require_free`, but retry for up to ``timeout`` seconds (a dying owner lets go)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            require_free(port)
        except PortInUseError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
        else:
            return


def ephemeral_range() -> tuple[int, int]:
    """The range the OS takes outgoing connections' local ports from (Linux: from /proc)."""
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return (49152, 65535) if sys.platform == "darwin" else (32768, 60999)
    return low, high


def free_ports(count: int, *, exclude: Iterable[int] = ()) -> list[int]:
    """``count`` distinct loopback ports that are free now, *outside* the ephemeral range.

    The stack keeps its ports across restarts; a port the OS could hand to some client's outgoing
    connection (the ephemeral range) may be taken while a node is down, and the node could not
    start again (``PortInUseError``). Ports below the range never are.
    """
    low, _ = ephemeral_range()
    pool = list(range(max(1024, low - 12_000), low)) if low > 2048 else []
    random.shuffle(pool)
    taken = set(exclude)
    ports: list[int] = []
    socks: list[socket.socket] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            try:
                sock.bind((LOOPBACK, pool.pop() if pool else 0))  # the OS picks once the pool is spent
            except OSError:
                continue
            port = int(sock.getsockname()[1])
            if port not in taken:
                taken.add(port)
                ports.append(port)
    finally:
        for sock in socks:
            sock.close()
    return ports


def spawn(cmd: list[str], *, env: dict[str, str], output: Path) -> int:
    """Start ``cmd`` detached in its own session (it outlives the caller); stdout+stderr to ``output``.

    ``os.posix_spawn`` rather than ``subprocess.Popen``: the stack's processes are meant to
    outlive this Python process, and a Popen object would warn when garbage-collected.
    """
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        return os.posix_spawn(
            cmd[0],
            cmd,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, fd, 1),
                (os.POSIX_SPAWN_DUP2, fd, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(fd)


def is_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (reaps it when it is our own child)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    return True


def owns(pid: int, marker: str) -> bool:
    """True if ``pid`` is alive and ``marker`` is one of its arguments (guards recycled pids)."""
    if not is_alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():  # no procfs (macOS): trust the recorded pid
        return True
    try:
        return marker.encode() in cmdline.read_bytes().split(b"\0")
    except OSError:
        return False


def terminate(pid: int, *, marker: str, timeout: float, sig: signal.Signals = signal.SIGTERM) -> bool:
    """Send ``sig``; after ``timeout`` seconds send SIGKILL if the pid still carries ``marker``.

    True if it needed the SIGKILL.
    """
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not owns(pid, marker):
            return False
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 10
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def log_tail(*paths: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of the first of ``paths`` that has any content."""
    for path in paths:
        try:
            text = path.read_text(errors="replace").strip()
        except OSError:
            continue
        if text:
            return "\n".join(text.splitlines()[-lines:])
    return ""
