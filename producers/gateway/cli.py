"""``evstream gateway``: serve the HTTP publishing gateway; ``evstream gateway token``: make a token.

Only serving needs the ``gateway`` extra: its modules (and the settings, which parse rates with
``limits``) are imported inside :func:`serve` and :func:`from_environment`, so ``--help`` and
``token`` work without it, as ``evstream console`` does.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer
import yaml

from evstream.endpoints import kafka_settings, load_settings, registry_settings
from evstream.errors import ConfigError
from evstream.imports import require_extra
from evstream.output import err_console
from evstream.producers.gateway.tokens import hash_token, new_token

__all__ = ["app", "from_environment"]

app = typer.Typer(no_args_is_help=False, invoke_without_command=True)


@app.callback()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Bind address (env EVSTREAM_GATEWAY_HOST; default 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (env EVSTREAM_GATEWAY_PORT; default 8080).")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Processes (each with its own producer; rate limits and idempotency keys are per process).",
        ),
    ] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every request (uvicorn's access log).")] = False,
) -> None:
    """Serve the HTTP publishing gateway until SIGTERM/Ctrl-C.

    POST /v1/events/{EventType} publishes one event, POST /v1/events:batch many; a 201 comes
    only after Kafka acknowledged (acks=all) and carries topic, partition and offset.

    Tokens come from EVSTREAM_GATEWAY_TOKENS (JSON) or EVSTREAM_GATEWAY_TOKENS_FILE (YAML);
    make one with `evstream gateway token`. Kafka and registry from EVSTREAM_BOOTSTRAP_SERVERS
    and EVSTREAM_REGISTRY_URL (or the running local stack). OpenAPI at /docs and /openapi.json;
    /healthz, /readyz and /metrics for operations.
    """
    if ctx.invoked_subcommand is not None:
        return
    require_extra("gateway", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "limits")
    import uvicorn  # noqa: PLC0415 - only serving needs the server

    from evstream.producers.gateway.settings import GatewaySettings  # noqa: PLC0415 - needs limits

    overrides: dict[str, Any] = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = load_settings(lambda: GatewaySettings(**overrides), prefix="EVSTREAM_GATEWAY_")
    tokens = settings.all_tokens()
    if not tokens:
        err_console.print(
            "warning: no tokens configured: every publish will be refused with 401", markup=False
        )
    # Worker processes build their app from the environment: hand them what was resolved here.
    os.environ["EVSTREAM_GATEWAY_HOST"], os.environ["EVSTREAM_GATEWAY_PORT"] = (
        settings.host,
        str(settings.port),
    )
    os.environ["EVSTREAM_BOOTSTRAP_SERVERS"] = kafka_settings(None).bootstrap_servers
    os.environ["EVSTREAM_REGISTRY_URL"] = registry_settings(None).url
    from_environment()  # config errors (catalog, tokens) stop here, once, not in every worker
    err_console.print(f"evstream gateway on http://{settings.host}:{settings.port} ({len(tokens)} tokens)")
    uvicorn.run(
        "evstream.producers.gateway.cli:from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        loop="uvloop",
        http="evstream.producers.gateway.server:GatewayHttpProtocol",  # httptools, with limits
        timeout_keep_alive=settings.idle_timeout_s,  # type: ignore[arg-type]  # uvicorn takes floats
        access_log=access_log,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
        server_header=False,
    )


@app.command()
def token(
    name: Annotated[str, typer.Option(help="Who holds it (becomes the events' source gateway/<name>).")],
    types: Annotated[str, typer.Option(help="Comma-separated event types it may publish, or '*'.")] = "*",
    output: Annotated[str, typer.Option("--output", "-o", help="yaml (tokens file) or json (env).")] = "yaml",
) -> None:
    """Print a new random token and the config entry to add (only its SHA-256 is stored)."""
    event_types = [t.strip() for t in types.split(",") if t.strip()]
    if not event_types:
        raise ConfigError("--types needs at least one event type (or '*')")
    secret = new_token()
    entry = {"name": name, "sha256": hash_token(secret), "event_types": event_types}
    err_console.print("token (shown once; give it to the client):", markup=False)
    print(secret)
    err_console.print("config entry:", markup=False)
    if output == "json":
        print(json.dumps(entry))
    else:
        print(yaml.safe_dump({"tokens": [entry]}, sort_keys=False), end="")


def from_environment() -> object:
    """The app built from EVSTREAM_* variables (what each uvicorn worker process calls)."""
    from evstream.producers.gateway.app import FastPath, create_app  # noqa: PLC0415
    from evstream.producers.gateway.server import GatewayHttpProtocol  # noqa: PLC0415
    from evstream.producers.gateway.settings import GatewaySettings  # noqa: PLC0415

    settings = load_settings(GatewaySettings, prefix="EVSTREAM_GATEWAY_")
    GatewayHttpProtocol.configure(settings)  # header limits and timeouts of this process
    return FastPath(create_app(settings, kafka=kafka_settings(None), registry=registry_settings(None)))
