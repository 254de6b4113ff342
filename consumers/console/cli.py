"""``evstream console``: serve the web console; ``evstream console token``: make an operator token."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from evstream.consumers.console.settings import ConsoleSettings, new_token, token_entry
from evstream.endpoints import kafka_settings, load_settings, registry_settings
from evstream.errors import ConfigError
from evstream.imports import require_extra
from evstream.output import err_console

__all__ = ["app"]

app = typer.Typer(no_args_is_help=False, invoke_without_command=True)


@app.callback()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Bind address (env EVSTREAM_CONSOLE_HOST; default 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (env EVSTREAM_CONSOLE_PORT; default 8090).")] = None,
    topics_file: Annotated[
        Path | None,
        typer.Option(
            help="topics-as-code YAML for the declared-vs-actual diff (default deploy/topics.yaml)."
        ),
    ] = None,
    catalog: Annotated[
        str | None, typer.Option(help="Event catalog module:ATTR (default: the project's).")
    ] = None,
) -> None:
    """Serve the web console until Ctrl-C: overview, topics, event browser, groups, schemas,
    dead letters, replay. Read-only without a token; redrive and replay need a token with the
    admin permission (EVSTREAM_CONSOLE_TOKENS or EVSTREAM_CONSOLE_TOKENS_FILE; make one with
    `evstream console token --admin`)."""
    if ctx.invoked_subcommand is not None:
        return
    require_extra("console", "starlette", "uvicorn", feature="the console")
    import uvicorn  # noqa: PLC0415 - only serving needs the server

    from evstream.consumers.console.app import create_app  # noqa: PLC0415 - needs starlette
    from evstream.consumers.console.backend import Backend  # noqa: PLC0415
    from evstream.settings import project_catalog  # noqa: PLC0415

    overrides: dict[str, Any] = {
        k: v for k, v in {"host": host, "port": port, "topics_file": topics_file}.items() if v is not None
    }
    settings = load_settings(lambda: ConsoleSettings(**overrides), prefix="EVSTREAM_CONSOLE_")
    try:
        events = project_catalog(catalog)
    except ConfigError as exc:
        err_console.print(f"warning: {exc}; records are shown with their writer schemas", markup=False)
        events = None
    backend = Backend(
        kafka_settings(),
        registry_settings(),
        events,
        topics_file=settings.resolved_topics_file(),
        max_scan_records=settings.max_scan_records,
        max_scan_seconds=settings.max_scan_seconds,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("httpx", "httpx2", "httpcore"):  # the registry client logs every request at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not settings.all_tokens():
        err_console.print(
            "note: no console tokens configured: read-only (redrive and replay refused)", markup=False
        )
    err_console.print(f"evstream console on http://{settings.host}:{settings.port}/", markup=False)
    uvicorn.run(create_app(backend, settings), host=settings.host, port=settings.port, log_level="warning")


@app.command()
def token(
    name: Annotated[str, typer.Option(help="Who holds the token (actions are logged under it).")],
    admin: Annotated[bool, typer.Option(help="May redrive dead letters and apply replays.")] = False,
) -> None:
    """Print a new token (line 1, give it to the operator) and its tokens-file entry (its SHA-256)."""
    value = new_token()
    typer.echo(value)
    typer.echo(token_entry(name, value, ["read", "admin"] if admin else ["read"]))
