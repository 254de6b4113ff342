"""``evstream groups``: list consumer groups; describe one like ``kafka-consumer-groups --describe``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from confluent_kafka.admin import AdminClient

from evstream.cli_options import Bootstrap, Output
from evstream.consumers.groups import describe_group, list_groups
from evstream.endpoints import kafka_settings
from evstream.output import OutputFormat, console, print_json, table
from evstream.settings import librdkafka_config

__all__ = ["app"]

app = typer.Typer(
    help="Consumer groups: state, members, assignments, committed offsets and lag.", no_args_is_help=True
)


def _admin(bootstrap: str | None) -> AdminClient:
    return AdminClient(librdkafka_config(kafka_settings(bootstrap), log_level=2))


@app.command("list")
def list_(
    bootstrap_servers: Bootstrap = None,
    output: Output = OutputFormat.table,
    internal: Annotated[
        bool, typer.Option("--internal", help="Include groups whose id starts with __ (the registry's).")
    ] = False,
) -> None:
    """Every consumer group with its state."""
    groups = list_groups(_admin(bootstrap_servers), include_internal=internal)
    if output is OutputFormat.json:
        print_json([asdict(g) for g in groups])
    else:
        table(None, ["group", "state", "type"], [[g.group_id, g.state, g.type] for g in groups])


@app.command()
def describe(
    group: Annotated[str, typer.Argument(help="The consumer group id.")],
    bootstrap_servers: Bootstrap = None,
    output: Output = OutputFormat.table,
) -> None:
    """State, members and, per partition, the committed offset, the end offset and the lag."""
    info = describe_group(_admin(bootstrap_servers), group)
    if output is OutputFormat.json:
        print_json({**asdict(info), "total_lag": info.total_lag})
        return
    console.print(
        f"group {info.group_id}: {info.state}, coordinator {info.coordinator}, "
        f"{len(info.members)} member(s), total lag {info.total_lag}"
    )
    table(
        None,
        ["topic", "partition", "committed", "end", "lag", "member"],
        [
            [
                p.topic,
                p.partition,
                "-" if p.committed is None else p.committed,
                p.end,
                "-" if p.lag is None else p.lag,
                p.member or "-",
            ]
            for p in info.partitions
        ],
    )
