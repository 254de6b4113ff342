"""``evstream schemas``: the compatibility gate over the committed Avro history, and registration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from confluent_kafka.schema_registry import SchemaRegistryClient

from evstream.endpoints import registry_settings
from evstream.errors import SchemaHistoryError
from evstream.output import OutputFormat, console, print_json, table
from evstream.schemas.catalog import load_catalog
from evstream.schemas.history import DEFAULT_ROOT, SchemaHistory, bump, check
from evstream.schemas.register import register_catalog

__all__ = ["app"]

app = typer.Typer(
    help="Event schemas: models are the source of truth; their Avro schemas are committed as history "
    "(schemas/avro/<subject>/v<N>.avsc) and gated by each subject's compatibility mode.",
    no_args_is_help=True,
)

CatalogOpt = Annotated[
    str, typer.Option("--catalog", help="The event catalog, module:attribute.", show_default=True)
]
HistoryOpt = Annotated[Path, typer.Option("--history", help="Root of the committed Avro history.")]
Output = Annotated[OutputFormat, typer.Option("--output", "-o", help="table for people, json for scripts.")]
DEFAULT_CATALOG = "evstream.schemas.domain:CATALOG"


@app.command("check")
def check_(
    catalog: CatalogOpt = DEFAULT_CATALOG,
    history: HistoryOpt = DEFAULT_ROOT,
    output: Output = OutputFormat.table,
) -> None:
    """Fail (exit 2) if a model changed without a new version, or a version breaks its subject's mode."""
    reports = check(load_catalog(catalog), SchemaHistory(history))
    if output is OutputFormat.json:
        print_json(
            [
                {
                    "subject": r.subject,
                    "type": r.event_type,
                    "mode": r.mode,
                    "latest": r.latest,
                    "ok": r.ok,
                    "problems": list(r.problems),
                }
                for r in reports
            ]
        )
    else:
        table(
            None,
            ["subject", "mode", "latest", "state"],
            [
                [r.subject, r.mode, f"v{r.latest}" if r.latest else "-", "ok" if r.ok else "FAIL"]
                for r in reports
            ],
        )
    problems = [p for r in reports for p in r.problems]
    if problems:
        raise SchemaHistoryError(
            problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
        )


@app.command("bump")
def bump_(catalog: CatalogOpt = DEFAULT_CATALOG, history: HistoryOpt = DEFAULT_ROOT) -> None:
    """Write the next version file for each changed model; refuses changes that break the mode."""
    written = bump(load_catalog(catalog), SchemaHistory(history))
    for path in written:
        console.print(f"wrote {path}")
    if not written:
        console.print("every model matches its latest committed version; nothing to write")


@app.command("register")
def register(
    catalog: CatalogOpt = DEFAULT_CATALOG,
    history: HistoryOpt = DEFAULT_ROOT,
    registry_url: Annotated[
        str | None,
        typer.Option("--registry-url", help="[default: EVSTREAM_REGISTRY_URL, else the local stack]"),
    ] = None,
    output: Output = OutputFormat.table,
) -> None:
    """Register every committed version in the registry (asking its compatibility endpoint first)."""
    settings = registry_settings(registry_url)
    with SchemaRegistryClient(settings.client_config()) as client:
        done = register_catalog(load_catalog(catalog), SchemaHistory(history), client)
    if output is OutputFormat.json:
        print_json([{"subject": r.subject, "mode": r.mode, "ids": list(r.versions)} for r in done])
    else:
        table(
            f"registered at {settings.url}",
            ["subject", "mode", "versions", "schema ids"],
            [[r.subject, r.mode, len(r.versions), ", ".join(map(str, r.versions))] for r in done],
        )
