"""``evstream schemas``: the compatibility gate over the committed Avro history, and registration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from confluent_kafka.schema_registry import SchemaRegistryClient

from evstream.cli_options import Output, RegistryUrl
from evstream.endpoints import registry_settings
from evstream.errors import SchemaHistoryError
from evstream.output import OutputFormat, console, print_json, table
from evstream.schemas.history import SchemaHistory, bump, check
from evstream.schemas.register import register_catalog
from evstream.settings import project_catalog

__all__ = ["app"]

app = typer.Typer(
    help="Event schemas: models are the source of truth; their Avro schemas are committed as history "
    "(schemas/avro/<subject>/v<N>.avsc) and gated by each subject's compatibility mode.",
    no_args_is_help=True,
)

CatalogOpt = Annotated[
    str | None,
    typer.Option(
        "--catalog",
        help="The event catalog, module:attribute (default: EVSTREAM_CATALOG or \\[tool.evstream] catalog).",
        show_default=False,
    ),
]
HistoryOpt = Annotated[
    Path | None,
    typer.Option(
        "--history",
        help="Root of the committed Avro history (default: EVSTREAM_SCHEMA_DIR or \\[tool.evstream] "
        "schema_dir, else schemas/avro in the project root).",
        show_default=False,
    ),
]


@app.command("check")
def check_(
    catalog: CatalogOpt = None,
    history: HistoryOpt = None,
    output: Output = OutputFormat.table,
) -> None:
    """Fail (exit 2) if a model changed without a new version, or a version breaks its subject's mode."""
    reports = check(project_catalog(catalog), SchemaHistory(history))
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
def bump_(catalog: CatalogOpt = None, history: HistoryOpt = None) -> None:
    """Write the next version file for each changed model; refuses changes that break the mode."""
    written = bump(project_catalog(catalog), SchemaHistory(history))
    for path in written:
        console.print(f"wrote {path}")
    if not written:
        console.print("every model matches its latest committed version; nothing to write")


@app.command("register")
def register(
    catalog: CatalogOpt = None,
    history: HistoryOpt = None,
    registry_url: RegistryUrl = None,
    output: Output = OutputFormat.table,
) -> None:
    """Register every committed version in the registry (asking its compatibility endpoint first)."""
    settings = registry_settings(registry_url)
    with SchemaRegistryClient(settings.client_config()) as client:
        done = register_catalog(project_catalog(catalog), SchemaHistory(history), client)
    if output is OutputFormat.json:
        print_json([{"subject": r.subject, "mode": r.mode, "ids": list(r.versions)} for r in done])
    else:
        table(
            f"registered at {settings.url}",
            ["subject", "mode", "versions", "schema ids"],
            [[r.subject, r.mode, len(r.versions), ", ".join(map(str, r.versions))] for r in done],
        )
