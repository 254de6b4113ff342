"""``evstream publish``: validate events from the command line or a JSONL file, then publish them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from evstream.cli_options import RegistryUrl
from evstream.endpoints import kafka_settings, load_settings, registry_settings
from evstream.errors import EventValidationError, EvstreamError, PublishError, UnknownEventTypeError
from evstream.logs import configure_logging
from evstream.output import OutputFormat, console, print_json, table
from evstream.producers.delivery import Delivery
from evstream.producers.producer import EventProducer
from evstream.producers.settings import ProducerSettings
from evstream.schemas.catalog import Catalog
from evstream.schemas.events import Event
from evstream.settings import project_catalog

__all__ = ["publish"]


class InputError(EvstreamError, ValueError):
    """The command line or the file does not describe valid events."""


def _parse_line(catalog: Catalog, text: str, event_type: str | None, where: str) -> Event:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if event_type is None:
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str) or "data" not in raw:
            raise InputError(f'{where}: expected {{"type": "<EventType>", "data": {{...}}}} (or pass --type)')
        event_type, raw = raw["type"], raw["data"]
    if not isinstance(raw, dict):
        raise InputError(f"{where}: event data must be a JSON object")
    try:
        return catalog.validate(event_type, raw)
    except (EventValidationError, UnknownEventTypeError) as exc:
        raise InputError(f"{where}: {exc}") from exc


def _read_events(
    catalog: Catalog, data: str | None, file: Path | None, event_type: str | None
) -> list[Event]:
    if (data is None) == (file is None):
        raise InputError("give exactly one of --data or --file")
    if data is not None:
        if event_type is None:
            raise InputError("--data needs --type")
        return [_parse_line(catalog, data, event_type, "--data")]
    assert file is not None
    try:
        lines = file.read_text().splitlines()
    except OSError as exc:
        raise InputError(f"{file}: {exc.strerror}") from exc
    events = [
        _parse_line(catalog, line, event_type, f"{file}:{number}")
        for number, line in enumerate(lines, start=1)
        if line.strip()
    ]
    if not events:
        raise InputError(f"{file}: no events")
    return events


def publish(
    topic: Annotated[
        str, typer.Argument(help="Topic to publish to (the subject follows the catalog's subject strategy).")
    ],
    event_type: Annotated[
        str | None, typer.Option("--type", "-t", help="Event type for --data, or for every line of --file.")
    ] = None,
    data: Annotated[str | None, typer.Option("--data", "-d", help="One event as a JSON object.")] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", help='JSON Lines: {"type": ..., "data": {...}} per line, or data with --type.'
        ),
    ] = None,
    source: Annotated[str | None, typer.Option(help="Envelope source (ce_source).")] = None,
    correlation_id: Annotated[
        str | None, typer.Option(help="Envelope correlation id for every event.")
    ] = None,
    catalog: Annotated[
        str | None,
        typer.Option(
            help="The event catalog, module:attribute "
            "(default: EVSTREAM_CATALOG or \\[tool.evstream] catalog)."
        ),
    ] = None,
    bootstrap_servers: Annotated[
        str | None,
        typer.Option(
            "--bootstrap-servers",
            "-b",
            help="Kafka to publish to (default: EVSTREAM_BOOTSTRAP_SERVERS, else the running local stack).",
        ),
    ] = None,
    registry_url: RegistryUrl = None,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="table for people, json for scripts.")
    ] = OutputFormat.table,
    log_level: Annotated[
        str, typer.Option(help="Log level on stderr (DEBUG, INFO show librdkafka's own lines too).")
    ] = "WARNING",
) -> None:
    """Validate events against the catalog, then publish them and print where Kafka stored them.

    Every event is validated before the first is sent: one invalid event exits 2 with its line and
    field, and nothing is published. Failed deliveries exit 1.
    """
    configure_logging("text", log_level.upper())
    event_catalog = project_catalog(catalog)
    events = _read_events(event_catalog, data, file, event_type)
    settings = load_settings(ProducerSettings, prefix="EVSTREAM_PRODUCER_")
    if source:
        settings = settings.model_copy(update={"source": source})
    producer = EventProducer(
        kafka=kafka_settings(bootstrap_servers),
        registry=registry_settings(registry_url),
        settings=settings,
        catalog=event_catalog,
    )
    results: list[Delivery | PublishError] = []
    with producer:
        for model in {type(e) for e in events}:  # registry work first: nothing is sent if it fails
            producer.encoder(topic, model)
        futures = []
        with Progress(
            TextColumn("publishing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=len(events) < 100 or output is OutputFormat.json,
        ) as progress:
            task = progress.add_task("publish", total=len(events))
            for event in events:
                futures.append(producer.publish(event, topic=topic, correlation_id=correlation_id))
                progress.advance(task)
            producer.flush(60)
        for future in futures:
            try:
                results.append(future.result(timeout=120))
            except PublishError as exc:
                results.append(exc)
    _report(results, output)
    failed = [r for r in results if isinstance(r, PublishError)]
    if failed:
        raise PublishError(f"{len(failed)} of {len(results)} event(s) not acknowledged; first: {failed[0]}")


def _report(results: list[Delivery | PublishError], output: OutputFormat) -> None:
    rows: list[dict[str, Any]] = [
        {
            "topic": r.topic,
            "partition": r.partition,
            "offset": r.offset,
            "event_id": str(r.event_id),
            "type": r.event_type,
        }
        if isinstance(r, Delivery)
        else {"error": str(r)}
        for r in results
    ]
    if output is OutputFormat.json:
        print_json(rows)
        return
    shown = rows if len(rows) <= 20 else rows[:10] + rows[-10:]
    table(
        f"published {sum('offset' in r for r in rows)} of {len(rows)} event(s)",
        ["type", "topic", "partition", "offset", "event id"],
        [
            [
                r.get("type", "FAILED"),
                r.get("topic", r.get("error")),
                r.get("partition"),
                r.get("offset"),
                r.get("event_id"),
            ]
            for r in shown
        ],
    )
