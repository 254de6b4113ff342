"""The ``evstream`` command: a thin Typer layer over the library.

Exit codes: 0 success; 1 an operation failed (stack, cluster, registry); 2 bad input
(usage, settings, a malformed file, a missing extra). Errors print one line on stderr,
``error: <reason>``.

The root group is lazy: ``evstream --help`` lists :data:`COMMANDS` from the table below without
importing any of them (no confluent-kafka, pydantic models, faust or FastAPI load for it); a
command's module is imported only when that command runs or shows its own help.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, Any, NamedTuple

import typer
from typer import _click as click
from typer.core import TyperCommand, TyperGroup

from evstream.errors import EvstreamError, StackStartError

__all__ = ["COMMANDS", "LazyGroup", "app", "exit_code", "main"]


class CommandEntry(NamedTuple):
    """Where a root command lives (``module:attribute``: a Typer app or a command function)."""

    target: str
    summary: str  # the one line the root help shows


# Root help lists these, in this order, without importing them.
COMMANDS: dict[str, CommandEntry] = {
    "stack": CommandEntry(
        "evstream.stack.cli:app", "Run a local Kafka + schema registry (no Docker): up, status, down, reset."
    ),
    "topics": CommandEntry("evstream.topics.cli:app", "Declare topics as code: plan, apply, list."),
    "schemas": CommandEntry(
        "evstream.schemas.cli:app", "Check, bump and register the Avro schemas of the event catalog."
    ),
    "publish": CommandEntry(
        "evstream.producers.cli:publish", "Validate events (JSON or JSON Lines) and publish them."
    ),
    "demo": CommandEntry(
        "evstream.producers.demo:demo", "Publish and read back a few demo events end to end."
    ),
    "consume": CommandEntry(
        "evstream.consumers.cli:consume", "Run a consumer group from a module's handlers."
    ),
    "groups": CommandEntry(
        "evstream.consumers.groups_cli:app", "List consumer groups; describe members, offsets and lag."
    ),
    "replay": CommandEntry(
        "evstream.consumers.replay.cli:app", "Plan, review and apply offset resets; replay a bounded range."
    ),
    "dlq": CommandEntry("evstream.consumers.replay.dlq_cli:app", "Dead-letter topics: list, show, redrive."),
    "worker": CommandEntry(
        "evstream.streams.cli:worker", "Run a stream app or a consumer group as a worker with ops endpoints."
    ),
    "gateway": CommandEntry(
        "evstream.producers.gateway.cli:app", "Serve the HTTP publishing gateway; make tokens."
    ),
    "console": CommandEntry(
        "evstream.consumers.console.cli:app", "Serve the web console; make operator tokens."
    ),
}

_loaded: dict[str, click.Command] = {}


def load_command(name: str) -> click.Command:
    """Import the command ``name`` of :data:`COMMANDS` (once) and build its click command.

    An import that fails for want of an optional dependency raises :class:`MissingExtraError`.
    """
    if name not in _loaded:
        from evstream.imports import missing_extra  # noqa: PLC0415 - only when a command runs

        module_name, _, attr = COMMANDS[name].target.partition(":")
        try:
            target: Any = getattr(importlib.import_module(module_name), attr)
        except ImportError as exc:
            extra = missing_extra(exc)
            if extra is None:
                raise
            raise extra from exc
        if isinstance(target, typer.Typer):
            command = typer.main.get_command(target)
        else:  # a command function
            single = typer.Typer(add_completion=False)
            single.command(name)(target)
            command = typer.main.get_command(single)
        command.name = name
        _loaded[name] = command
    return _loaded[name]


class LazyGroup(TyperGroup):
    """A root group whose subcommands are imported on demand (click's "lazy loading subcommands").

    While the root help is rendered, :meth:`get_command` answers with stand-ins that carry only
    the name and the one-line summary, so listing the commands imports none of them.
    """

    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        if self._listing and cmd_name not in _loaded:
            return TyperCommand(cmd_name, short_help=entry.summary, help=entry.summary)
        return load_command(cmd_name)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="evstream",
    cls=LazyGroup,
    help="evstream: schema-checked Kafka events for Python.\n\n"
    "Connection settings come from EVSTREAM_* variables (EVSTREAM_BOOTSTRAP_SERVERS, "
    "EVSTREAM_REGISTRY_URL, ...), else the local stack `evstream stack up` started; the event "
    "catalog from EVSTREAM_CATALOG or \\[tool.evstream] catalog in your pyproject.toml. See the README.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        import evstream  # noqa: PLC0415 - the version is looked up only when asked

        print(f"evstream {evstream.__version__}")
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
        try:
            app(standalone_mode=True)
        except TimeoutError as exc:  # an admin future that never answered: say so in one line
            if isinstance(exc, EvstreamError):
                raise
            raise EvstreamError("the Kafka cluster did not answer in time (timed out)") from exc
    except EvstreamError as exc:
        from evstream.output import err_console  # noqa: PLC0415 - rich loads only to report
        from evstream.security import explain  # noqa: PLC0415

        exc = explain(exc)  # a refused login or an untrusted broker, not "timed out"
        err_console.print(f"error: {exc}", markup=False, soft_wrap=True)
        if isinstance(exc, StackStartError) and exc.log_tail:
            err_console.print(exc.log_tail, markup=False, soft_wrap=True)
        sys.exit(exit_code(exc))
