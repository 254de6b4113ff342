"""``evstream topics``: plan, apply and list topics declared in a YAML file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from confluent_kafka.admin import AdminClient

from evstream.cli_options import Bootstrap, Output
from evstream.endpoints import kafka_settings
from evstream.output import OutputFormat, console, print_json, table
from evstream.settings import librdkafka_config
from evstream.topics.acls import AclChange, apply_acl_changes, describe_acls, plan_acls
from evstream.topics.admin import apply_changes, describe_topics, list_topics
from evstream.topics.plan import TopicChange, plan_changes
from evstream.topics.spec import load_topics_file

__all__ = ["app"]

app = typer.Typer(
    help="Topics as code: declare topics (partitions, replication, retention, cleanup, configs) in YAML; "
    "`plan` shows the diff against the cluster, `apply` makes it so (idempotent).",
    no_args_is_help=True,
)

TopicsPath = Annotated[
    Path, typer.Option("--file", "-f", help="The topics declaration (YAML).", show_default=True)
]
DEFAULT_FILE = Path("deploy/topics.yaml")


def _admin(bootstrap: str | None) -> AdminClient:
    # librdkafka's own connection logs would bury the one-line error we print on failure.
    return AdminClient(librdkafka_config(kafka_settings(bootstrap), log_level=2))


def _plan(path: Path, bootstrap: str | None) -> tuple[AdminClient, list[TopicChange], list[AclChange] | None]:
    declared = load_topics_file(path)
    admin = _admin(bootstrap)
    current = describe_topics(admin, [t.name for t in declared.topics])
    changes = plan_changes(declared.topics, current)
    acls = None if declared.acls is None else plan_acls(declared.acls, describe_acls(admin))
    return admin, changes, acls


def _acl_rows(acls: list[AclChange]) -> list[dict[str, str]]:
    return [
        {
            "action": c.action,
            "principal": c.acl.principal,
            "resource_type": c.acl.resource_type,
            "name": c.acl.name,
            "pattern": c.acl.pattern,
            "operation": c.acl.operation,
            "host": c.acl.host,
        }
        for c in acls
    ]


def _show(changes: list[TopicChange], output: OutputFormat, acls: list[AclChange] | None = None) -> None:
    """Topics (and, when the file declares ``acls``, ACL rules). JSON: a list of topics, or
    ``{"topics": [...], "acls": [...]}`` for a file with ``acls``."""
    if output is OutputFormat.json:
        topics = [
            {
                "topic": c.name,
                "action": c.action,
                "partitions": {"current": c.current_partitions, "desired": c.spec.partitions},
                "configs": [
                    {"key": cc.key, "current": cc.current, "desired": cc.desired} for cc in c.config_changes
                ],
            }
            for c in changes
        ]
        print_json(topics if acls is None else {"topics": topics, "acls": _acl_rows(acls)})
        return
    rows = []
    for c in changes:
        parts = (
            str(c.spec.partitions)
            if c.current_partitions in (None, c.spec.partitions)
            else (f"{c.current_partitions} -> {c.spec.partitions}")
        )
        configs = ", ".join(
            f"{cc.key}={cc.desired}" if cc.current is None else f"{cc.key}: {cc.current} -> {cc.desired}"
            for cc in c.config_changes
        )
        rows.append([c.name, c.action, parts, configs])
    table(None, ["topic", "action", "partitions", "configs"], rows)
    if acls is not None:
        table(
            None,
            ["acl", "principal", "resource", "operation", "host"],
            [
                [
                    c.action,
                    c.acl.principal,
                    f"{c.acl.resource_type}:{c.acl.name}{'*' if c.acl.pattern == 'prefixed' else ''}",
                    c.acl.operation,
                    c.acl.host,
                ]
                for c in acls
            ],
        )


@app.command()
def plan(
    file: TopicsPath = DEFAULT_FILE, bootstrap_servers: Bootstrap = None, output: Output = OutputFormat.table
) -> None:
    """Show what `apply` would change. Partition decreases fail here, before anything is applied.

    With an `acls` key in the file, also each ACL rule to add, and those on the cluster the file
    no longer declares (`remove`: deleted only by `apply --delete-acls`).
    """
    _, changes, acls = _plan(file, bootstrap_servers)
    _show(changes, output, acls)


@app.command()
def apply(
    file: TopicsPath = DEFAULT_FILE,
    bootstrap_servers: Bootstrap = None,
    delete_acls: Annotated[
        bool,
        typer.Option(
            "--delete-acls", help="Also delete ACLs on the cluster that the file's `acls` no longer declares."
        ),
    ] = False,
    output: Output = OutputFormat.table,
) -> None:
    """Create missing topics, add partitions, set configs, add declared ACLs. Twice changes nothing."""
    admin, changes, acls = _plan(file, bootstrap_servers)
    apply_changes(admin, changes)
    if acls is not None:
        apply_acl_changes(admin, acls, delete=delete_acls)
    _show(changes, output, acls)
    if output is OutputFormat.table:
        done = sum(c.action != "unchanged" for c in changes)
        console.print(f"applied {done} change(s); {len(changes) - done} topic(s) already as declared")
        if acls is not None:
            added = sum(c.action == "add" for c in acls)
            removed = sum(c.action == "remove" for c in acls)
            line = f"added {added} ACL(s)"
            if removed:
                line += f"; {'deleted' if delete_acls else 'kept'} {removed} ACL(s) the file does not declare"
                line += "" if delete_acls else " (pass --delete-acls to delete them)"
            console.print(line)


@app.command("add-retry-topics")
def add_retry_topics(
    group: Annotated[str, typer.Option("--group", "-g", help="The consumer group the topics are for.")],
    topic: Annotated[list[str], typer.Option("--topic", "-t", help="A source topic the group consumes.")],
    file: TopicsPath = DEFAULT_FILE,
    delay: Annotated[
        list[float] | None,
        typer.Option(help="Retry tier delays in seconds (default: EVSTREAM_CONSUMER_RETRY_TOPIC_DELAYS_S)."),
    ] = None,
    redrive: Annotated[
        bool,
        typer.Option(
            "--redrive/--no-redrive",
            help="Also declare <topic>.<group>.redrive, where `evstream dlq redrive` sends the group's "
            "dead letters (the runner reads it when it exists).",
        ),
    ] = True,
) -> None:
    """Declare a group's retry, dead-letter and redrive topics in the file (then run `apply`)."""
    from evstream.consumers.routing import add_failure_topics  # noqa: PLC0415 - consumers load on use
    from evstream.consumers.settings import ConsumerSettings  # noqa: PLC0415
    from evstream.endpoints import load_settings  # noqa: PLC0415

    settings = load_settings(ConsumerSettings, prefix="EVSTREAM_CONSUMER_")
    if delay:
        settings = load_settings(
            lambda: ConsumerSettings.model_validate(
                {**settings.model_dump(), "retry_topic_delays_s": tuple(delay)}
            ),
            prefix="EVSTREAM_CONSUMER_",
        )
    added = add_failure_topics(file, group, topic, settings, redrive=redrive)
    names = ", ".join(spec.name for spec in added)
    console.print(f"declared {len(added)} topic(s) in {file}{': ' + names if names else ''}")


@app.command("list")
def list_(
    bootstrap_servers: Bootstrap = None,
    internal: Annotated[
        bool, typer.Option("--internal", help="Include __consumer_offsets and friends.")
    ] = False,
    output: Output = OutputFormat.table,
) -> None:
    """List the cluster's topics with partitions and replication factor."""
    topics = list_topics(_admin(bootstrap_servers), include_internal=internal)
    if output is OutputFormat.json:
        print_json(
            [
                {"topic": t.name, "partitions": t.partitions, "replication_factor": t.replication_factor}
                for t in topics
            ]
        )
    else:
        table(
            None,
            ["topic", "partitions", "replication"],
            [[t.name, t.partitions, t.replication_factor] for t in topics],
        )
