"""``evstream consume``: run a consumer group from a module's Handlers until SIGTERM/SIGINT."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from evstream.cli_options import Bootstrap, RegistryUrl
from evstream.consumers.dedupe import SQLiteDedupeStore
from evstream.consumers.handlers import Handlers
from evstream.consumers.runner import ConsumerRunner
from evstream.consumers.settings import ConsumerSettings
from evstream.endpoints import kafka_settings, load_settings, registry_settings
from evstream.imports import import_object
from evstream.logs import LogFormat, configure_logging
from evstream.output import console
from evstream.settings import ProjectSettings, project_catalog

__all__ = ["AppDir", "consume", "load_handlers"]


def load_handlers(spec: str, app_dir: Path | None = None) -> Handlers:
    """Import ``module:attribute`` (attribute defaults to ``handlers``) and check it is a Handlers.

    ``app_dir`` goes first on ``sys.path`` before the import (``--app-dir``).
    """
    return import_object(spec, Handlers, default_attr="handlers", app_dir=app_dir)


AppDir = Annotated[
    Path | None,
    typer.Option(
        "--app-dir",
        help="Folder put first on sys.path before importing the target, as uvicorn's --app-dir "
        "(default: EVSTREAM_APP_DIR or \\[tool.evstream] app_dir, else the current folder).",
        show_default=False,
    ),
]


def _process_settings(settings: ConsumerSettings) -> ConsumerSettings:
    """This command owns its process: freeze what start-up built out of GC passes unless told not to."""
    if "EVSTREAM_CONSUMER_GC_FREEZE" in os.environ:
        return settings
    return settings.model_copy(update={"gc_freeze": True})


def consume(
    group: Annotated[str, typer.Argument(help="Consumer group id: one group per service.")],
    handlers: Annotated[str, typer.Argument(help="module:attribute of a consumers.Handlers.")],
    topic: Annotated[
        list[str] | None, typer.Option("--topic", help="Topics to subscribe (default: the handlers' topics).")
    ] = None,
    dedupe: Annotated[
        Path | None, typer.Option(help="SQLite file remembering handled event ids (idempotent handling).")
    ] = None,
    bootstrap_servers: Bootstrap = None,
    registry_url: RegistryUrl = None,
    until_idle: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without a record.")
    ] = None,
    log_format: Annotated[
        LogFormat, typer.Option(help="text, or json lines carrying event_id, correlation_id, trace_id.")
    ] = "text",
    log_level: Annotated[str, typer.Option(help="Root log level (DEBUG, INFO, WARNING...).")] = "WARNING",
    app_dir: AppDir = None,
) -> None:
    """Run a consumer group: at-least-once, retries in place, retry topics, dead letters to <topic>.dlq.

    Settings come from EVSTREAM_CONSUMER_* (e.g. EVSTREAM_CONSUMER_RETRY_TOPIC_DELAYS_S='[1,10,60]',
    EVSTREAM_CONSUMER_GROUP_INSTANCE_ID=worker-1 for static membership). Stops gracefully on
    SIGTERM/SIGINT: the record in hand finishes, offsets are committed (deadline:
    EVSTREAM_CONSUMER_SHUTDOWN_TIMEOUT_S).
    """
    configure_logging(log_format, log_level.upper())
    project = ProjectSettings()
    loaded = load_handlers(handlers, app_dir or project.app_dir)
    runner = ConsumerRunner(
        group,
        loaded,
        topics=topic or None,
        kafka=kafka_settings(bootstrap_servers),
        registry=registry_settings(registry_url),
        settings=_process_settings(load_settings(ConsumerSettings, prefix="EVSTREAM_CONSUMER_")),
        dedupe=SQLiteDedupeStore(dedupe) if dedupe is not None else None,
        # The project's catalog, when it names one: foreign records (no ce_type) of its other
        # types follow the unknown-event policy instead of being dead-lettered as unknown.
        catalog=project_catalog(settings=project) if project.catalog else None,
    )
    console.print(f"consuming {', '.join(runner.topics)} as group {group!r}; stop with Ctrl-C or SIGTERM")
    try:
        stats = runner.run(install_signal_handlers=True, until_idle_s=until_idle)
    finally:
        if runner.dedupe is not None:
            runner.dedupe.close()
    console.print(
        f"stopped: consumed {stats.consumed}, handled {stats.handled}, retried {stats.retried}, "
        f"to retry topics {stats.retry_topic}, blocked {stats.blocked}, "
        f"dead-lettered {stats.dead_lettered}, skipped {stats.skipped}, duplicates {stats.duplicates}"
    )
