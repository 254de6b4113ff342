"""The ``evstream`` command: a thin Typer layer over the library.

Exit codes: 0 success; 1 an operation failed (stack, cluster, registry); 2 bad input
(usage, settings, a malformed file). Errors print one line on stderr, ``error: <reason>``.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from evstream import __version__
from evstream.consumers.cli import consume
from evstream.consumers.groups_cli import app as groups_app
from evstream.consumers.replay.cli import app as replay_app
from evstream.consumers.replay.dlq_cli import app as dlq_app
from evstream.errors import EvstreamError, StackStartError
from evstream.output import err_console
from evstream.producers.cli import publish
from evstream.producers.demo import demo
from evstream.producers.gateway.cli import app as gateway_app
from evstream.schemas.cli import app as schemas_app
from evstream.stack.cli import app as stack_app
from evstream.streams.cli import worker
from evstream.topics.cli import app as topics_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="evstream",
    help="evstream: schema-checked Kafka events for Python.\n\n"
    "stack   run a local Kafka + schema registry (no Docker)\n\n"
    "topics  declare topics as code: plan, apply, list\n\n"
    "schemas check, bump and register the Avro schemas of the event catalog\n\n"
    "publish validate events (JSON or JSONL) and publish them\n\n"
    "consume run a consumer group from a module's handlers\n\n"
    "groups  list consumer groups; describe members, offsets and lag\n\n"
    "gateway serve the HTTP publishing gateway (tokens, limits, idempotency, OpenAPI)\n\n"
    "demo    publish and consume a few demo events end to end\n\n"
    "Connection settings come from EVSTREAM_* variables (EVSTREAM_BOOTSTRAP_SERVERS, "
    "EVSTREAM_REGISTRY_URL, ...); see the README.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(stack_app, name="stack")
app.add_typer(topics_app, name="topics")
app.add_typer(schemas_app, name="schemas")
app.command("publish")(publish)
app.command("demo")(demo)
app.command("consume")(consume)
app.add_typer(groups_app, name="groups")
app.add_typer(replay_app, name="replay")
app.add_typer(dlq_app, name="dlq")
app.command("worker")(worker)
app.add_typer(gateway_app, name="gateway")


def _version(value: bool) -> None:
    if value:
        print(f"evstream {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """evstream command line."""


def exit_code(exc: EvstreamError) -> int:
    """2 for bad input (errors that are also ``ValueError``), 1 for failed operations."""
    return 2 if isinstance(exc, ValueError) else 1


def main() -> None:
    """Entry point of the ``evstream`` console script."""
    try:
        app(standalone_mode=True)
    except EvstreamError as exc:
        err_console.print(f"error: {exc}", markup=False, soft_wrap=True)
        if isinstance(exc, StackStartError) and exc.log_tail:
            err_console.print(exc.log_tail, markup=False, soft_wrap=True)
        sys.exit(exit_code(exc))
