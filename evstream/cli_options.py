"""The options every ``evstream`` command spells the same way (one definition, one help text)."""

from __future__ import annotations

from typing import Annotated

import typer

from evstream.output import OutputFormat

__all__ = ["Bootstrap", "Output", "RegistryUrl"]

Bootstrap = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-servers",
        "-b",
        help="Kafka to talk to (default: EVSTREAM_BOOTSTRAP_SERVERS, else the running local stack).",
        show_default=False,
    ),
]
RegistryUrl = Annotated[
    str | None,
    typer.Option(
        "--registry-url",
        help="The schema registry (default: EVSTREAM_REGISTRY_URL, else the running local stack).",
        show_default=False,
    ),
]
Output = Annotated[OutputFormat, typer.Option("--output", "-o", help="table for people, json for scripts.")]
