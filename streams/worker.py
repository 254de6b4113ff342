"""``evstream worker``: run a stream app, a faust app or a consumer group with one operations surface.

Every kind gets ``/healthz``, ``/readyz`` and ``/metrics`` (:class:`evstream.ops.OpsServer`),
settings from the environment and a graceful stop on SIGTERM/SIGINT (stream apps: finish the
batch, commit, leave the group; faust apps: faust's worker; consumer groups: the runner).
"""

from __future__ import annotations

import fcntl
import logging
import signal
import threading
from pathlib import Path
from typing import Any, TextIO

from evstream.consumers import Handlers
from evstream.consumers.worker import WorkerSettings, run_handlers
from evstream.errors import ConfigError
from evstream.imports import require_extra
from evstream.ops import OpsServer
from evstream.settings import KafkaSettings, RegistrySettings

__all__ = ["WorkerSettings", "lock_data_dir", "run_app", "run_worker"]

log = logging.getLogger("evstream.worker")


def run_worker(
    target: Any, settings: WorkerSettings, kafka: KafkaSettings, registry: RegistrySettings
) -> int:
    """Run ``target`` (an :class:`evstream.streams.App`, a ``faust.App`` or a
    ``consumers.Handlers``) until stopped; the exit code."""
    from evstream.streams.app import App  # noqa: PLC0415 - the API module imports this one's neighbours

    if isinstance(target, App):
        return run_app(target, settings)
    if isinstance(target, Handlers):
        return run_handlers(target, settings, kafka, registry)
    if type(target).__module__.startswith("faust"):
        require_extra("faust", "faust", feature="a faust worker")
        from evstream.streams.faust_worker import run_faust  # noqa: PLC0415 - faust only when asked

        return run_faust(target, settings)
    raise ConfigError(
        f"cannot run a {type(target).__name__}: give an evstream.streams.App, a faust.App or a "
        "consumers.Handlers"
    )


_LOCKS: list[TextIO] = []  # held for the life of the process


def lock_data_dir(data_dir: Path) -> None:
    """One worker per data dir: a second one is refused (their table files would clash)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = (data_dir / ".evstream-worker.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ConfigError(
            f"another worker uses the table files in {data_dir}: give each worker its own "
            "EVSTREAM_STREAMS_DATA_DIR"
        ) from None
    _LOCKS.append(lock)


def run_app(app: Any, settings: WorkerSettings) -> int:
    """Run an evstream stream app on the native engine until SIGTERM/SIGINT; the exit code."""
    from evstream.streams.engine.runner import StreamRunner  # noqa: PLC0415

    data_dir = Path(app.settings.data_dir or f"{app.app_id}-data")
    if str(app.settings.store).startswith("rocksdb"):
        require_extra("rocksdb", "rocksdict")
        lock_data_dir(data_dir)
    runner = StreamRunner(app, data_dir=data_dir, lag_interval_s=settings.lag_interval_s)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: finishing the batch, committing, leaving the group", signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    ops = OpsServer(settings.http_host, settings.http_port, runner.readiness)
    port = ops.start()
    log.info("operations endpoints on http://%s:%d", settings.http_host, port)
    try:
        runner.run(stop)
    finally:
        ops.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
