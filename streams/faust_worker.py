"""``evstream worker`` for a user's own ``faust.App`` (the ``faust`` extra): faust's worker with
evstream's ``/healthz``, ``/readyz`` and ``/metrics``, and a watchdog for faust's known stalls.

faust-streaming stays supported for faust apps (agents, faust tables), reading and writing
evstream's events with :class:`evstream.streams.faust_codec.EventCodec`; evstream's own stream
API runs on its native engine instead (:mod:`evstream.streams.engine`). A faust worker exits with
:data:`STALLED` (75) when faust stalls before joining its group, or when an assigned partition
with lag makes no progress for ``EVSTREAM_WORKER_STALL_TIMEOUT_S`` (a faust/aiokafka failure
mode after rebalances); supervisors restart it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import faust
from faust.sensors import Sensor

from evstream.consumers.worker import WorkerSettings
from evstream.errors import AuthorizationError, ConfigError
from evstream.ops import OpsServer
from evstream.settings import KafkaSettings, aiokafka_config
from evstream.streams.metrics import (
    RECOVERY_REMAINING,
    STALL_RESTARTS,
    STREAM_EVENTS,
    STREAM_LAG,
    STREAM_LATENCY,
)
from evstream.streams.transport import refused
from evstream.streams.worker import _LOCKS as _LOCKS  # noqa: PLC0414 - re-exported: one list of held locks
from evstream.streams.worker import lock_data_dir

__all__ = [
    "STALLED",
    "LagTracker",
    "PrometheusSensor",
    "SendErrors",
    "broker_credentials",
    "faust_readiness",
    "prepare_table_files",
    "run_faust",
    "stall_restarts",
]

log = logging.getLogger("evstream.worker")


def broker_credentials(kafka: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    """faust's ``broker_credentials`` for ``kafka``: the connection of :func:`aiokafka_config`
    (SASL user, password and mechanism; an ``ssl.SSLContext`` that verifies the brokers), for a
    user's ``faust.App(..., broker_credentials=broker_credentials(KafkaSettings()))``; None for
    PLAINTEXT. The password is read here (from ``EVSTREAM_SASL_PASSWORD_FILE`` when given)."""
    protocol = kafka.security_protocol
    if protocol == "PLAINTEXT":
        return None
    conf = aiokafka_config(kafka)
    if protocol == "SSL":
        return faust.SSLCredentials(conf["ssl_context"])
    if kafka.sasl_mechanism == "OAUTHBEARER":
        raise ConfigError("a faust app cannot use SASL OAUTHBEARER (faust needs a token provider)")
    return faust.SASLCredentials(
        username=conf["sasl_plain_username"],
        password=conf["sasl_plain_password"],
        ssl_context=conf.get("ssl_context"),  # None: SASL_PLAINTEXT
        mechanism=conf["sasl_mechanism"],
    )


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


def run_faust(app: faust.App, settings: WorkerSettings) -> int:
    """Run a faust app with the ops endpoints until stopped; the exit code."""
    app.sensors.add(PrometheusSensor())

    lag = LagTracker()

    @app.timer(settings.lag_interval_s)  # type: ignore[untyped-decorator]
    async def refresh_lag() -> None:
        lag.update(app.consumer)
        update_recovery(app)
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
    lock_data_dir(tables.parent)  # one worker per data dir, as for the native engine
    marker = tables / ".evstream-clean-stop"
    if tables.exists() and not marker.exists():
        log.warning(
            "%s: no clean stop recorded; removing the table files to rebuild them from the changelogs", tables
        )
        shutil.rmtree(tables)
    marker.unlink(missing_ok=True)
    tables.mkdir(parents=True, exist_ok=True)
    return marker


_RECOVERY_LABELS: set[tuple[str, str]] = set()  # the series update_recovery set last


def update_recovery(app: Any) -> None:
    """``evstream_stream_recovery_remaining{topic,partition}`` from faust's recovery: its active
    changelog partitions (series of partitions no longer recovered here are removed)."""
    recovery = getattr(app.tables, "recovery", None)
    highwaters = dict(getattr(recovery, "active_highwaters", {}) or {})
    offsets = getattr(recovery, "active_offsets", {}) or {}
    current = set()
    for tp, highwater in sorted(highwaters.items()):
        offset = offsets.get(tp)
        left = 0 if highwater is None or offset is None else max(0, highwater - offset)
        labels = (tp.topic, str(tp.partition))
        RECOVERY_REMAINING.labels(*labels).set(left)
        current.add(labels)
    for labels in _RECOVERY_LABELS - current:
        RECOVERY_REMAINING.remove(*labels)
    _RECOVERY_LABELS.clear()
    _RECOVERY_LABELS.update(current)


class SendErrors(Sensor):
    """Counts records faust could not produce (changelogs included): any means an unclean stop."""

    count = 0

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        self.count += 1


class PrometheusSensor(Sensor):
    """Counts events and measures processing latency per source topic."""

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> dict[str, float]:
        return {"started": time.perf_counter()}

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: dict[str, Any] | None = None
    ) -> None:
        STREAM_EVENTS.labels(tp.topic).inc()
        if state and "started" in state:
            STREAM_LATENCY.labels(tp.topic).observe(time.perf_counter() - state["started"])


class LagTracker:
    """Lag per assigned partition (gauge), and partitions that have lag but make no progress."""

    def __init__(self) -> None:
        self._labels: set[tuple[str, str]] = set()
        self._progress: dict[tuple[str, int], tuple[int | None, float]] = {}  # committed, since

    def update(self, consumer: Any) -> dict[tuple[str, int], int]:
        """Refresh the gauge from the consumer's view (changelogs excluded); returns the lags."""
        lags: dict[tuple[str, int], int] = {}
        now = time.monotonic()
        for tp in consumer.assignment():
            if tp.topic.endswith("-changelog"):
                continue  # the worker writes these; it reads them only to recover tables
            end = consumer.highwater(tp)
            if end is None:
                continue
            committed = consumer._committed_offset.get(tp)  # faust keeps no public accessor
            key = (tp.topic, tp.partition)
            lags[key] = max(0, end - (committed if committed is not None else 0))
            before = self._progress.get(key)
            # A transaction's commit marker is never delivered, so an idle partition of a
            # transactionally written topic shows lag 1 for ever: that is not a stall.
            if before is None or before[0] != committed or lags[key] <= 1:
                self._progress[key] = (committed, now)
        current = {(t, str(p)) for t, p in lags}
        for topic, partition in self._labels - current:  # no longer ours: drop the stale series
            STREAM_LAG.remove(topic, partition)
        for (name, number), value in lags.items():
            STREAM_LAG.labels(name, str(number)).set(value)
        self._labels = current
        self._progress = {k: v for k, v in self._progress.items() if k in lags}
        return lags

    def stalled(self, after_s: float) -> list[tuple[str, int]]:
        """Partitions with lag whose committed offset has not moved for ``after_s`` seconds."""
        now = time.monotonic()
        return sorted(k for k, (_committed, since) in self._progress.items() if now - since > after_s)

    def reset(self) -> None:
        """Forget progress clocks (after a rebalance or recovery, time starts again)."""
        now = time.monotonic()
        self._progress = {k: (c, now) for k, (c, _since) in self._progress.items()}
