"""``evstream worker``: run a faust stream app or a consumer group with one operations surface.

Both kinds get ``/healthz``, ``/readyz`` and ``/metrics`` (:class:`evstream.ops.OpsServer`),
settings from the environment and a graceful stop on SIGTERM/SIGINT (faust's worker: finish
in-flight events, commit, flush changelogs; the consumer runner: finish the record, commit).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import faust
from prometheus_client import REGISTRY

from evstream.consumers import Handlers
from evstream.consumers.worker import WorkerSettings, run_handlers
from evstream.errors import AuthorizationError, ConfigError
from evstream.ops import OpsServer
from evstream.settings import KafkaSettings, RegistrySettings
from evstream.streams.metrics import (
    STALL_RESTARTS,
    LagTracker,
    PrometheusSensor,
    RecoveryCollector,
    SendErrors,
)
from evstream.streams.transport import refused

__all__ = ["STALLED", "WorkerSettings", "faust_readiness", "run_worker", "stall_restarts"]

log = logging.getLogger("evstream.worker")


def faust_readiness(app: faust.App) -> str | None:
    """None when the app owns partitions, is not rebalancing and its tables are recovered."""
    if not app.started:
        return "starting"
    if not app.rebalancing_count:
        return "joining the consumer group"
    if app.rebalancing:
        return "rebalancing"
    recovery = app.tables.recovery  # type: ignore[attr-defined]  # on the concrete TableManager
    if recovery.in_recovery or not recovery.completed.is_set():
        return "recovering tables from their changelogs"
    if not app.consumer.assignment():
        return "waiting for partition assignment"
    return None


def run_worker(
    target: Any, settings: WorkerSettings, kafka: KafkaSettings, registry: RegistrySettings
) -> int:
    """Run ``target`` (an :class:`evstream.streams.App`, a ``faust.App`` or a
    ``consumers.Handlers``) until stopped; the exit code."""
    from evstream.streams.app import App  # noqa: PLC0415 - the API module imports this one's neighbours

    if isinstance(target, App):
        target.preflight()  # co-partitioning: a clear ConfigError before anything starts
        return _run_faust(target.faust, settings)
    if isinstance(target, faust.App):
        return _run_faust(target, settings)
    if isinstance(target, Handlers):
        return run_handlers(target, settings, kafka, registry)
    raise ConfigError(
        f"cannot run a {type(target).__name__}: give an evstream.streams.App, a faust.App or a "
        "consumers.Handlers"
    )


STALLED = 75  # exit code: restart me


def _stall_file(app: faust.App) -> Path:
    return Path(app.conf.datadir) / ".evstream-stall-exits"


def _stall_exit(app: faust.App) -> None:
    """Exit 75 for a restart, counting it in the data dir (the next worker reports the count)."""
    try:
        path = _stall_file(app)
        path.parent.mkdir(parents=True, exist_ok=True)
        count = int(path.read_text() or 0) if path.exists() else 0
        path.write_text(str(count + 1))
    except (OSError, ValueError):
        log.exception("could not record the stall exit")
    os._exit(STALLED)


def stall_restarts(app: faust.App) -> int:
    """How many times a worker on this data dir exited 75 (stalled) before this one started."""
    try:
        return int(_stall_file(app).read_text() or 0)
    except (OSError, ValueError):
        return 0


REFUSED_STOP_S = 30.0
"""How long a worker refused by an ACL gets to stop gracefully before it exits anyway."""


def _watchdog(app: faust.App, timeout: float) -> None:
    """Stop the worker when an ACL refuses its consumer (:func:`transport.refused`: faust would
    wait for ever, or crash with a traceback); exit 75 if it has neither joined its group nor
    started recovering within ``timeout``."""
    deadline = time.monotonic() + timeout
    joined = False
    while True:
        error = refused(app)
        if error is not None:
            _stop_refused(app, error)
            return
        if not joined and app.rebalancing_count:  # joined: from here on, recovery may take its time
            joined = True
        if not joined and time.monotonic() >= deadline:
            log.error(
                "not joined the group after %.0fs (%s): exiting for a restart", timeout, faust_readiness(app)
            )
            _stall_exit(app)
        time.sleep(0.5)


def _stop_refused(app: faust.App, error: AuthorizationError) -> None:
    """Stop gracefully (as on SIGTERM; ``run_worker`` then raises ``error``, which the CLI prints as
    its one line); exit 1 with that line if the stop takes longer than :data:`REFUSED_STOP_S`."""
    app.evstream_refused = error  # type: ignore[attr-defined]  # the transport stops fetching
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(REFUSED_STOP_S)
    os.write(2, f"error: {error}\n".encode())
    os._exit(1)


def _run_faust(app: faust.App, settings: WorkerSettings) -> int:
    app.sensors.add(PrometheusSensor())

    lag = LagTracker()

    @app.timer(settings.lag_interval_s)  # type: ignore[untyped-decorator]
    async def refresh_lag() -> None:
        lag.update(app.consumer)
        if faust_readiness(app) is not None:
            lag.reset()  # rebalancing or recovering: not a stall
            return
        stuck = lag.stalled(settings.stall_timeout_s)
        if stuck:
            # A known faust/aiokafka failure mode after rebalances: assigned partitions that are
            # never fetched again. Exit for the supervisor to restart (offsets were committed up
            # to the last handled event; the aggregates are idempotent).
            log.error(
                "partitions with lag made no progress for %.0fs: %s; exiting", settings.stall_timeout_s, stuck
            )
            _stall_exit(app)

    restarts = stall_restarts(app)
    STALL_RESTARTS.set(restarts)
    if restarts:
        log.warning("this data dir saw %d stall exit(s) (exit 75) before this start", restarts)
    if not any(isinstance(c, RecoveryCollector) for c in _COLLECTORS):
        collector = RecoveryCollector(app)
        REGISTRY.register(collector)
        _COLLECTORS.append(collector)
    ops = OpsServer(settings.http_host, settings.http_port, lambda: faust_readiness(app))
    port = ops.start()
    watchdog = threading.Thread(target=_watchdog, args=(app, settings.startup_timeout_s), daemon=True)
    watchdog.start()
    log.info("operations endpoints on http://%s:%d", settings.http_host, port)
    marker = prepare_table_files(app)
    send_errors = SendErrors()
    app.sensors.add(send_errors)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    finally:
        ops.stop()
    clean = code == 0 and worker.crash_reason is None and send_errors.count == 0
    if marker is not None and clean:  # every changelog write was acknowledged: the files match
        marker.touch()
    error = refused(app)
    if error is not None:  # stopped for it: the one line the CLI prints
        raise error
    return code


_COLLECTORS: list[RecoveryCollector] = []
_LOCKS: list[TextIO] = []  # held for the life of the process


def prepare_table_files(app: faust.App) -> Path | None:
    """Local table files (``rocksdb://``) are a cache of the changelogs, trusted only after a
    clean stop; returns the marker a clean stop leaves (None for in-memory tables).

    A worker killed mid-stream can leave files that disagree with its changelogs (a write applied
    locally whose changelog record was never produced); the next owner would serve it and never
    write it to the changelog. So without the marker the files are removed and the tables rebuilt
    from the changelogs, as Kafka Streams does without its checkpoint file.
    """
    if not str(app.conf.store).startswith("rocksdb"):
        return None
    tables = Path(app.conf.tabledir)
    tables.parent.mkdir(parents=True, exist_ok=True)
    lock = (tables.parent / ".evstream-worker.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ConfigError(
            f"another worker uses the table files in {tables.parent}: give each worker its own "
            "EVSTREAM_STREAMS_DATA_DIR"
        ) from None
    _LOCKS.append(lock)
    marker = tables / ".evstream-clean-stop"
    if tables.exists() and not marker.exists():
        log.warning(
            "%s: no clean stop recorded; removing the table files to rebuild them from the changelogs", tables
        )
        shutil.rmtree(tables)
    marker.unlink(missing_ok=True)
    tables.mkdir(parents=True, exist_ok=True)
    return marker
