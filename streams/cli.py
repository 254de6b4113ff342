"""``evstream worker <module:app>``: run a stream app or a consumer group as a worker process."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer

from evstream.endpoints import kafka_settings, load_settings, registry_settings
from evstream.imports import import_object
from evstream.logs import configure_logging

__all__ = ["worker"]


def worker(
    target: Annotated[
        str,
        typer.Argument(
            help="module:attribute of a faust.App (e.g. evstream.streams.demo:app) or a consumers.Handlers."
        ),
    ],
    group: Annotated[str | None, typer.Option(help="Consumer group (Handlers targets only).")] = None,
    host: Annotated[
        str | None, typer.Option(help="Bind address of the ops endpoints [default 127.0.0.1].")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port of /healthz, /readyz, /metrics [default 9102].")
    ] = None,
) -> None:
    """Run a worker: a faust stream app, or a consumer group from a Handlers module.

    Serves /healthz (alive), /readyz (partitions assigned and tables recovered) and /metrics
    (Prometheus: events, processing latency, lag per partition). Settings from EVSTREAM_WORKER_*,
    EVSTREAM_STREAMS_*, EVSTREAM_CONSUMER_* and the Kafka/registry variables. SIGTERM stops it
    gracefully.
    """
    from evstream.streams.worker import WorkerSettings, run_worker  # noqa: PLC0415 - faust loads only for workers

    given: dict[str, Any] = {"group": group, "http_host": host, "http_port": port}
    options = {k: v for k, v in given.items() if v is not None}
    settings = load_settings(lambda: WorkerSettings(**options), prefix="EVSTREAM_WORKER_")  # options over env
    configure_logging("text", settings.log_level.upper())
    logging.getLogger("evstream").setLevel(settings.log_level.upper())
    code = run_worker(
        import_object(target, object, default_attr="app"),
        settings,
        kafka_settings(None),
        registry_settings(None),
    )
    raise typer.Exit(code)
