"""``evstream replay plan|apply|run``: planned, reviewable offset resets and bounded replays."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from confluent_kafka.admin import AdminClient
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from evstream.cli_options import Bootstrap, Output, RegistryUrl
from evstream.consumers.cli import load_handlers
from evstream.consumers.replay.apply import ApplyResult, apply_plan
from evstream.consumers.replay.bounded import BoundedReplay, ReplayResult
from evstream.consumers.replay.cluster import Cluster
from evstream.consumers.replay.plan import ReplayPlan, Target, plan_replay
from evstream.endpoints import kafka_settings, registry_settings
from evstream.errors import ReplayInputError
from evstream.output import OutputFormat, console, print_json, table
from evstream.settings import librdkafka_config

__all__ = ["app"]

app = typer.Typer(
    help="Replay event history: plan an offset reset, review it, apply it; or replay a bounded range.",
    no_args_is_help=True,
)

Group = Annotated[str | None, typer.Option("--group", "-g", help="The consumer group to move.")]
Topic = Annotated[str | None, typer.Option("--topic", "-t", help="The topic whose offsets move.")]
Partitions = Annotated[list[int] | None, typer.Option("--partition", "-p", help="Only these partitions.")]
ToEarliest = Annotated[bool, typer.Option("--to-earliest", help="The first retained record.")]
ToLatest = Annotated[bool, typer.Option("--to-latest", help="The end: skip everything unread.")]
ToOffset = Annotated[int | None, typer.Option("--to-offset", help="This offset in every chosen partition.")]
ToDatetime = Annotated[
    str | None,
    typer.Option("--to-datetime", help="The first record at or after this ISO-8601 time (with zone)."),
]
ByDuration = Annotated[str | None, typer.Option("--by-duration", help="That long ago, ISO-8601 (PT1H, P2D).")]
ShiftBy = Annotated[
    int | None, typer.Option("--shift-by", help="Move the committed offset by N (negative: back).")
]
AllowNew = Annotated[
    bool, typer.Option("--allow-new-group", help="Position a group that has not consumed yet.")
]


def _cluster(bootstrap: str | None) -> Cluster:
    return Cluster(AdminClient(librdkafka_config(kafka_settings(bootstrap), log_level=2)))


def _target(
    to_earliest: bool,
    to_latest: bool,
    to_offset: int | None,
    to_datetime: str | None,
    by_duration: str | None,
    shift_by: int | None,
) -> Target:
    chosen: list[Target] = []
    if to_earliest:
        chosen.append(Target(kind="earliest"))
    if to_latest:
        chosen.append(Target(kind="latest"))
    if to_offset is not None:
        if to_offset < 0:
            raise ReplayInputError("--to-offset must be >= 0")
        chosen.append(Target(kind="offset", value=to_offset))
    if to_datetime is not None:
        chosen.append(Target(kind="datetime", value=to_datetime))
    if by_duration is not None:
        chosen.append(Target(kind="duration", value=by_duration))
    if shift_by is not None:
        chosen.append(Target(kind="shift", value=shift_by))
    if len(chosen) != 1:
        raise ReplayInputError(
            "give exactly one of --to-earliest, --to-latest, --to-offset, --to-datetime, --by-duration,"
            " --shift-by"
        )
    return chosen[0]


def _show_plan(plan: ReplayPlan) -> None:
    console.print(
        f"plan for group {plan.group_id} on {plan.topic} ({plan.target}): "
        f"{plan.replayed} event(s) replayed, {plan.skipped} skipped"
    )
    table(
        None,
        ["partition", "committed", "target", "earliest", "end", "replayed", "skipped"],
        [
            [
                p.partition,
                "-" if p.current is None else p.current,
                p.target,
                p.earliest,
                p.end,
                p.replayed,
                p.skipped,
            ]
            for p in plan.partitions
        ],
    )


def _plan_from_flags(
    cluster: Cluster,
    group: str | None,
    topic: str | None,
    target: Target,
    partitions: list[int] | None,
    allow_new_group: bool,
) -> ReplayPlan:
    if not group or not topic:
        raise ReplayInputError("--group and --topic are required (or, for apply, a plan file)")
    return plan_replay(cluster, group, topic, target, partitions=partitions, allow_new_group=allow_new_group)


def _plan_dict(plan: ReplayPlan) -> dict[str, Any]:
    return {**plan.model_dump(mode="json"), "replayed": plan.replayed, "skipped": plan.skipped}


@app.command()
def plan(
    group: Group = None,
    topic: Topic = None,
    partition: Partitions = None,
    to_earliest: ToEarliest = False,
    to_latest: ToLatest = False,
    to_offset: ToOffset = None,
    to_datetime: ToDatetime = None,
    by_duration: ByDuration = None,
    shift_by: ShiftBy = None,
    allow_new_group: AllowNew = False,
    save: Annotated[Path | None, typer.Option(help="Write the plan to this JSON file (for `apply`).")] = None,
    bootstrap_servers: Bootstrap = None,
    output: Output = OutputFormat.table,
) -> None:
    """Show, per partition, the committed offset, the target and how many events would be replayed.

    Changes nothing. Save it with --save (or -o json) and apply it with `evstream replay apply`.
    """
    target = _target(to_earliest, to_latest, to_offset, to_datetime, by_duration, shift_by)
    made = _plan_from_flags(_cluster(bootstrap_servers), group, topic, target, partition, allow_new_group)
    if save is not None:
        made.save(save)
    if output is OutputFormat.json:
        print_json(_plan_dict(made))
    else:
        _show_plan(made)
        if save is not None:
            console.print(f"saved to {save}; apply with: evstream replay apply {save}")


@app.command()
def apply(
    plan_file: Annotated[Path | None, typer.Argument(help="A plan saved by `replay plan --save`.")] = None,
    group: Group = None,
    topic: Topic = None,
    partition: Partitions = None,
    to_earliest: ToEarliest = False,
    to_latest: ToLatest = False,
    to_offset: ToOffset = None,
    to_datetime: ToDatetime = None,
    by_duration: ByDuration = None,
    shift_by: ShiftBy = None,
    allow_new_group: AllowNew = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check everything, change nothing.")] = False,
    bootstrap_servers: Bootstrap = None,
    output: Output = OutputFormat.table,
) -> None:
    """Move the group's committed offsets to the plan's targets.

    Refused while the group has active members (they are listed). The plan is re-checked first:
    if committed offsets moved or retention deleted the target, nothing changes and the reason
    is printed; records appended since are only noted.
    """
    cluster = _cluster(bootstrap_servers)
    if plan_file is not None:
        if group or topic:
            raise ReplayInputError("give a plan file or --group/--topic with a target, not both")
        chosen = ReplayPlan.load(plan_file)
    else:
        target = _target(to_earliest, to_latest, to_offset, to_datetime, by_duration, shift_by)
        chosen = _plan_from_flags(cluster, group, topic, target, partition, allow_new_group)
    result = apply_plan(cluster, chosen, dry_run=dry_run)
    _show_apply(result, output)


def _show_apply(result: ApplyResult, output: OutputFormat) -> None:
    if output is OutputFormat.json:
        print_json(
            {
                "applied": result.applied,
                "notes": result.notes,
                "plan": _plan_dict(result.plan),
                "committed": [
                    {"topic": t, "partition": p, "offset": o}
                    for (t, p), o in sorted(result.committed.items())
                ],
            }
        )
        return
    _show_plan(result.plan)
    for note in result.notes:
        console.print(f"note: {note}")
    if result.applied:
        console.print(f"applied: group {result.plan.group_id} now starts at the targets above")
    else:
        console.print("dry run: nothing changed")


@app.command()
def run(
    topic: Annotated[str, typer.Option("--topic", "-t", help="The topic to replay.")],
    from_: Annotated[str, typer.Option("--from", help="earliest, an offset, or an ISO-8601 datetime.")],
    until: Annotated[
        str, typer.Option(help="now (the end when it starts), an offset, or a datetime.")
    ] = "now",
    handler: Annotated[
        str | None, typer.Option(help="module:attribute of a consumers.Handlers to call for each event.")
    ] = None,
    to_topic: Annotated[str | None, typer.Option(help="Copy the records to this topic instead.")] = None,
    event_type: Annotated[list[str] | None, typer.Option("--type", help="Only these event types.")] = None,
    name: Annotated[
        str | None, typer.Option(help="Name of this replay; run again with the same name to resume it.")
    ] = None,
    bootstrap_servers: Bootstrap = None,
    registry_url: RegistryUrl = None,
    output: Output = OutputFormat.table,
) -> None:
    """Process exactly the records in [--from, --until) and stop, even while new records arrive.

    End offsets are fixed before the first record is read. Uses its own consumer group
    (evstream-replay.<name>): live groups are untouched. Interrupted (Ctrl-C), it saves its
    progress; the same command with the same --name resumes.
    """
    replay = BoundedReplay(
        topic=topic,
        start=from_,
        until=until,
        handlers=load_handlers(handler) if handler else None,
        to_topic=to_topic,
        types=frozenset(event_type or ()),
        kafka=kafka_settings(bootstrap_servers),
        registry=registry_settings(registry_url) if handler else None,
    )
    if name:
        replay.name = name
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        with Progress(
            TextColumn(f"replay {replay.name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} ev/s"),
            TimeRemainingColumn(),
            console=console,
            transient=output is OutputFormat.json,
        ) as bar:
            task = bar.add_task("replay", total=None, rate="-")

            def progress(done: int, total: int) -> None:
                speed = bar.tasks[task].speed
                bar.update(task, completed=done, total=total, rate=f"{speed:,.0f}" if speed else "-")

            result = replay.run(progress=progress, stop=stop)
            bar.update(task, completed=result.processed, total=result.total)
    finally:
        signal.signal(signal.SIGINT, previous)
    _show_run(result, interrupted=stop.is_set(), output=output)
    if stop.is_set():
        raise typer.Exit(130)


def _show_run(result: ReplayResult, *, interrupted: bool, output: OutputFormat) -> None:
    summary = {
        "name": result.name,
        "resumed": result.resumed,
        "interrupted": interrupted,
        "processed": result.processed,
        "delivered": result.delivered,
        "skipped": result.skipped,
        "undecodable": result.undecodable,
        "ranges": [
            {
                "topic": t,
                "partition": p,
                "from": a,
                "until": b,
                "processed": result.per_partition.get((t, p), 0),
            }
            for (t, p), (a, b) in sorted(result.ranges.items())
        ],
    }
    if output is OutputFormat.json:
        print_json(summary)
        return
    state = "interrupted (run again with --name to resume)" if interrupted else "done"
    console.print(
        f"replay {result.name} {state}: processed {result.processed}, delivered {result.delivered}, "
        f"skipped {result.skipped}, undecodable {result.undecodable}"
        + (" (resumed)" if result.resumed else "")
    )
