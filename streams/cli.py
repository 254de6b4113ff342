"""``evstream worker <module:app>``: run a stream app or a consumer group as a worker process."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer

from evstream.consumers.cli import AppDir
from evstream.consumers.handlers import Handlers
from evstream.consumers.worker import WorkerSettings, run_handlers
from evstream.endpoints import kafka_settings, load_settings, registry_settings
from evstream.imports import import_object
from evstream.logs import configure_logging
from evstream.settings import ProjectSettings

__all__ = ["worker"]


def worker(
    target: Annotated[
        str,
        typer.Argument(
            help="module:attribute of an evstream.streams.App (e.g. evstream.streams.demo:app), a"
            " consumers.Handlers, or a faust.App (the faust extra)."
        ),
    ],
    group: Annotated[str | None, typer.Option(help="Consumer group (Handlers targets only).")] = None,
    host: Annotated[
        str | None,
        typer.Option(
            help="Bind address of the ops endpoints (env EVSTREAM_WORKER_HTTP_HOST; default 127.0.0.1)."
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="Port of /healthz, /readyz, /metrics (env EVSTREAM_WORKER_HTTP_PORT; default 9102)."
        ),
    ] = None,
    app_dir: AppDir = None,
) -> None:
    """Run a worker: a stream app, a consumer group from a Handlers module, or a faust app.

    Serves /healthz (alive), /readyz (partitions assigned and tables recovered) and /metrics
    (Prometheus: events, processing latency, lag per partition). Settings from EVSTREAM_WORKER_*,
    EVSTREAM_STREAMS_*, EVSTREAM_CONSUMER_* and the Kafka/registry variables. SIGTERM stops it
    gracefully.
    """
    # The target first: its own import errors (or a missing extra) are the first thing to report.
    app = import_object(target, object, default_attr="app", app_dir=app_dir or ProjectSettings().app_dir)
    given: dict[str, Any] = {"group": group, "http_host": host, "http_port": port}
    options = {k: v for k, v in given.items() if v is not None}
    settings = load_settings(lambda: WorkerSettings(**options), prefix="EVSTREAM_WORKER_")  # options over env
    configure_logging("text", settings.log_level.upper())
    logging.getLogger("evstream").setLevel(settings.log_level.upper())
    if isinstance(app, Handlers):  # a consumer group
        raise typer.Exit(run_handlers(app, settings, kafka_settings(None), registry_settings(None)))
    from evstream.streams.worker import run_worker  # noqa: PLC0415 - the engine loads only for stream workers

    raise typer.Exit(run_worker(app, settings, kafka_settings(None), registry_settings(None)))
