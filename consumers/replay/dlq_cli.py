"""``evstream dlq list|show|redrive``: look into dead-letter topics and send records back."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from confluent_kafka.schema_registry import SchemaRegistryClient

from evstream.cli_options import Bootstrap, Output, RegistryUrl
from evstream.consumers.replay.deadletters import read_dead_letters
from evstream.consumers.replay.redrives import redrive
from evstream.endpoints import kafka_settings, registry_settings
from evstream.errors import DecodeError, RegistryError, ReplayInputError
from evstream.output import OutputFormat, console, print_json, table
from evstream.schemas import AvroCodec, RegistrySchemaStore

__all__ = ["app"]

app = typer.Typer(
    help="Dead-letter topics: list, show, redrive to the consumer group that failed each record.",
    no_args_is_help=True,
)

Dlq = Annotated[str, typer.Option("--dlq", help="The dead-letter topic, e.g. orders.dlq.")]
ErrorType = Annotated[str | None, typer.Option("--error-type", help="Only records with this error type.")]
Group = Annotated[str | None, typer.Option("--group", "-g", help="Only dead letters of this consumer group.")]
Limit = Annotated[
    int | None, typer.Option("--limit", min=1, help="At most this many records (oldest first).")
]


@app.command("list")
def list_(
    dlq: Dlq,
    error_type: ErrorType = None,
    group: Group = None,
    limit: Limit = None,
    bootstrap_servers: Bootstrap = None,
    output: Output = OutputFormat.table,
) -> None:
    """Dead letters with the group that failed them, their origin, error and redrive count."""
    records = read_dead_letters(
        kafka_settings(bootstrap_servers), dlq, error_type=error_type, group=group, limit=limit
    )
    if output is OutputFormat.json:
        print_json([r.summary() for r in records])
        return
    table(
        f"{dlq}: {len(records)} record(s)",
        ["partition", "offset", "type", "group", "origin", "error", "attempts", "redriven"],
        [
            [
                r.partition,
                r.offset,
                r.event_type,
                r.group or "-",
                r.origin or "-",
                r.error_type or "-",
                r.summary()["attempts"],
                r.redrive_count,
            ]
            for r in records
        ],
    )


def _decoded(registry_url: str | None, key: bytes | None, value: bytes | None) -> dict[str, Any]:
    """The record's key and value read with their writer schemas, when Confluent-framed."""
    out: dict[str, Any] = {}
    with SchemaRegistryClient(registry_settings(registry_url).client_config()) as client:
        codec = AvroCodec(RegistrySchemaStore(client))
        for name, payload in (("key", key), ("value", value)):
            if not payload or payload[0] != 0 or len(payload) <= 5:
                continue
            try:
                schema_id = codec.schema_id_of(payload)
                out[f"{name}_schema_id"] = schema_id
                decoded = codec.decode_any(payload)
                if name == "value":
                    out["record"] = codec.record_name(schema_id)
                out[f"{name}_decoded"] = json.loads(json.dumps(decoded, default=str))
            except (DecodeError, RegistryError) as exc:
                out[f"{name}_error"] = f"{exc.__class__.__name__}: {exc}"
    return out


@app.command()
def show(
    dlq: Dlq,
    offset: Annotated[int, typer.Option("--offset", min=0, help="The record's offset.")],
    partition: Annotated[int, typer.Option("--partition", min=0, help="The record's partition.")] = 0,
    bootstrap_servers: Bootstrap = None,
    registry_url: RegistryUrl = None,
    decode: Annotated[
        bool,
        typer.Option("--decode/--no-decode", help="Read Confluent-framed key and value via the registry."),
    ] = True,
) -> None:
    """One dead letter: every header, the value's size and first bytes, and (``--decode``) the
    key and value read with their writer schemas, with the value's record name: the type of a
    foreign producer's record, which carries no ``ce_type``."""
    found = read_dead_letters(
        kafka_settings(bootstrap_servers), dlq, partition=partition, offset=offset, limit=1
    )
    if not found or found[0].offset != offset:
        raise ReplayInputError(f"no record at {dlq}[{partition}]@{offset}")
    record = found[0]
    print_json(
        {
            **record.summary(),
            "key": record.key.decode(errors="replace") if record.key else None,
            "headers": {k: v.decode(errors="replace") for k, v in record.headers},
            "value_bytes": len(record.value or b""),
            "value_head_hex": (record.value or b"")[:64].hex(),
            **(_decoded(registry_url, record.key, record.value) if decode else {}),
        }
    )


def _coordinates(texts: list[str]) -> set[tuple[int, int]]:
    """``P:O`` strings as (partition, offset) pairs."""
    found = set()
    for text in texts:
        partition, sep, offset = text.strip().partition(":")
        if not (sep and partition.isdigit() and offset.isdigit()):
            raise ReplayInputError(f"--offset takes PARTITION:OFFSET, e.g. 0:42, not {text!r}")
        found.add((int(partition), int(offset)))
    return found


@app.command("redrive")
def redrive_(
    dlq: Dlq,
    error_type: ErrorType = None,
    group: Group = None,
    to_topic: Annotated[
        str | None,
        typer.Option(
            "--to-topic",
            help="Send the records here instead of <topic>.<group>.redrive of the group that failed "
            "each (needed for dead letters without evstream.dlq.group).",
        ),
    ] = None,
    limit: Limit = None,
    max_redrives: Annotated[
        int, typer.Option(min=1, help="Refuse records already redriven this many times (loop guard).")
    ] = 3,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be sent; send nothing.")
    ] = False,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Reconsider every dead letter, not only new ones.")
    ] = False,
    offsets: Annotated[
        list[str] | None,
        typer.Option(
            "--offset",
            metavar="P:O",
            help="Only the dead letter at partition P, offset O of the DLQ (repeatable); "
            "leaves the position of evstream-redrive.<dlq> as it is.",
        ),
    ] = None,
    bootstrap_servers: Bootstrap = None,
    output: Output = OutputFormat.table,
) -> None:
    """Send dead letters back to the consumer group that failed each, and to it only: to its
    <topic>.<group>.redrive topic (declared in topics.yaml), with an incremented evstream.redrive.count.

    Each run works on the dead letters that arrived since the previous run (position kept in the
    group evstream-redrive.<dlq>, or evstream-redrive.<dlq>.<group> with --group); the dead-letter
    topic itself is never changed. With --offset, exactly the chosen records are sent and the
    position does not move.
    """
    result = redrive(
        kafka_settings(bootstrap_servers),
        dlq,
        error_type=error_type,
        group=group,
        to_topic=to_topic,
        limit=limit,
        max_redrives=max_redrives,
        dry_run=dry_run,
        from_beginning=from_beginning,
        only=_coordinates(offsets) if offsets else None,
    )
    if output is OutputFormat.json:
        print_json(
            {
                "dry_run": result.dry_run,
                "sent": dict(result.sent),
                "passed_over": result.passed_over,
                "redriven": [[r.partition, r.offset] for r in result.redriven],
                "refused": [{**r.summary(), "why": why} for r, why in result.refused],
            }
        )
        return
    verb = "would send" if dry_run else "sent"
    where = ", ".join(f"{n} to {t}" for t, n in sorted(result.sent.items())) or "nothing"
    console.print(
        f"{verb} {result.total_sent}: {where}; refused {len(result.refused)}; "
        f"passed over by the filter {result.passed_over}"
    )
    for record, why in result.refused:
        console.print(f"refused {dlq}[{record.partition}]@{record.offset} ({record.event_type}): {why}")
