"""What happens to one record, whoever feeds it: decode, route, run handlers, hold, publish.

The :class:`Processor` knows nothing of Kafka clients: the worker's loop
(:mod:`evstream.streams.engine.runner`) feeds it records from a consumer and gives it a producer
as its :class:`Outputs`; the testing harness (:mod:`evstream.testing.streams`) feeds it records
from memory and captures what it outputs. Both run the same apply logic.
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from evstream.errors import DecodeError, SkipEvent, UnknownEventTypeError, WaitForRow
from evstream.schemas import Event
from evstream.schemas.causation import child_traceparent
from evstream.schemas.events import envelope_headers
from evstream.streams.context import ORIGIN_HEADER, Published, Received, RecordLike, Sent, enter, leave
from evstream.streams.metrics import STREAM_EVENTS, STREAM_LATENCY

if TYPE_CHECKING:
    from evstream.streams.joins import Waiting
    from evstream.streams.state.tables import TableState
    from evstream.streams.topics import EventTopic

__all__ = ["Handler", "Outputs", "Processor", "Route"]

log = logging.getLogger("evstream.streams")

Handler = Callable[[Any, Received], Awaitable[None] | None]
FORWARD_CACHE = 10_000  # forwarded events kept for their read-back (in flight: popped when read)
Headers = list[tuple[str, bytes]]


class Outputs(Protocol):
    """Where derived events, forwards and dead letters go (a producer, or a test's capture)."""

    def produce(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> None: ...


@dataclass(slots=True)
class Route:
    """One handler: its topic, the event types it takes, the tables it reads and writes."""

    topic: EventTopic
    types: tuple[type[Event], ...]
    handler: Handler
    lookups: tuple[TableState[Any], ...]
    updates: tuple[TableState[Any], ...]
    is_async: bool = False
    waiting: Waiting | None = None
    name: str = field(default="")

    def tables(self) -> list[TableState[Any]]:
        found = [*self.lookups, *self.updates]
        if self.waiting is not None:
            found.append(self.waiting.state)
        return found


def _bytes_headers(headers: Sequence[tuple[str, str | bytes | None]]) -> Headers:
    return [(k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in headers]


class Processor:
    """The routes and tables of one app and the processing of its records."""

    def __init__(self, app_id: str, source: str) -> None:
        self.app_id = app_id
        self.source = source
        self.routes: list[Route] = []
        self.by_topic: dict[str, list[Route]] = {}
        self.tables: list[TableState[Any]] = []
        self.ready: set[tuple[Waiting, int]] = set()  # partitions whose held events may go on
        self.outputs: Outputs | None = None
        self.dead_letter_topic = f"{app_id}-dlq"
        self.dead_lettered = 0
        self._metrics: dict[str, Any] = {}
        # events this worker forwarded to its own topics, by (topic, origin, origin offset): read
        # back from Kafka, the same bytes need no second decode and validation (bounded, FIFO)
        self._forwarded: OrderedDict[tuple[str, str, int], Event] = OrderedDict()
        self._targets: set[str] = set()  # topics this worker forwards to and reads
        self._wanted: dict[tuple[str, type[Event]], bool] = {}  # (topic, model): a route takes it

    def add_route(self, route: Route) -> None:
        self.routes.append(route)
        self.by_topic.setdefault(route.topic.name, []).append(route)

    def _out(self) -> Outputs:
        if self.outputs is None:
            from evstream.errors import ConfigError  # noqa: PLC0415

            raise ConfigError("the app is not running: publish and forward work inside its handlers")
        return self.outputs

    # -- records ------------------------------------------------------------------------------------

    async def process(self, records: Sequence[RecordLike]) -> None:
        """Handle a batch of records in order (each record's handlers, then held events it freed).
        Metrics per batch and topic: the records counted, the mean time per record observed."""
        perf = time.perf_counter
        spent: dict[str, list[float]] = {}
        for record in records:
            topic = record.topic() or ""
            routes = self.by_topic.get(topic)
            if not routes:
                continue
            started = perf()
            event = None
            if topic in self._targets and self._forwarded:  # maybe one this worker forwarded
                event = self._forwarded.pop((topic, *self._origin(record)), None)
            if event is None:
                event = self._decode(record, routes)
            if event is not None:
                received: Received | None = None
                for route in routes:
                    if route.types and not isinstance(event, route.types):
                        continue
                    if received is None or received._decisions or received._published or received._waiting:
                        received = self.receive(record, event)  # a fresh one per handler
                    await self._process(route, received)
            tally = spent.get(topic)
            if tally is None:
                tally = spent[topic] = [0, 0.0]
            tally[0] += 1
            tally[1] += perf() - started
        for topic, (count, seconds) in spent.items():
            metrics = self._metrics.get(topic)
            if metrics is None:
                metrics = self._metrics[topic] = (STREAM_LATENCY.labels(topic), STREAM_EVENTS.labels(topic))
            metrics[0].observe(seconds / count)
            metrics[1].inc(count)

    def _decode(self, record: RecordLike, routes: list[Route]) -> Event | None:
        """The record's event; None when no route takes its type (not decoded at all: its writer
        schema id names the model) or it cannot be read (dead-lettered)."""
        value = record.value()
        codec = routes[0].topic.codec
        try:
            if not isinstance(value, bytes):
                where = f"{record.topic()}[{record.partition()}]@{record.offset()}"
                raise DecodeError(where, "a record without a value cannot be an event")
            model = codec.model_for(value)
            wanted = self._wanted.get((routes[0].topic.name, model))
            if wanted is None:
                wanted = self._wanted[(routes[0].topic.name, model)] = any(
                    not r.types or issubclass(model, r.types) for r in routes
                )
            if not wanted:
                return None  # other event types on the topic pass by
            return codec.decode(value, model)
        except (DecodeError, UnknownEventTypeError, ValidationError) as exc:
            reason = "unknown_schema" if isinstance(exc, UnknownEventTypeError) else "undecodable"
            self.dead_letter(record, reason, exc)
            return None

    def dead_letter(self, record: RecordLike, reason: str, error: BaseException | None) -> None:
        """Send ``record`` as it was to ``<app_id>-dlq``, with ``evstream.dlq.*`` headers saying why."""
        from evstream.consumers.failures import Origin, dead_letter_headers  # noqa: PLC0415

        log.warning(
            "dead-lettering %s[%s]@%s (%s): %s",
            record.topic(),
            record.partition(),
            record.offset(),
            reason,
            error,
        )
        origin = Origin.of(record)  # type: ignore[arg-type]  # a Message's methods
        headers = dead_letter_headers(record, origin, reason=reason, error=error, group=self.app_id)  # type: ignore[arg-type]
        self._out().produce(self.dead_letter_topic, record.key(), record.value(), _bytes_headers(headers))
        self.dead_lettered += 1

    @staticmethod
    def _origin(record: RecordLike) -> tuple[str, int]:
        """Where the record was first read: the ``evs-origin`` header, else its own position."""
        for name, value in record.headers() or ():
            if name == ORIGIN_HEADER:
                where, _, at = (value.decode() if isinstance(value, bytes) else str(value)).rpartition(":")
                return where, int(at)
        return f"{record.topic()}:{record.partition()}", record.offset() or 0

    def receive(self, record: RecordLike, event: Event) -> Received:
        """The :class:`Received` of a decoded record."""
        origin, origin_offset = self._origin(record)
        topic, partition, offset = record.topic() or "", record.partition() or 0, record.offset() or 0
        return Received(event, topic, partition, offset, origin, origin_offset, record)

    async def _process(self, route: Route, received: Received) -> None:
        """Handle one event of ``route`` (or hold it, with ``wait=``), then release held events
        whose rows it wrote."""
        waiting = route.waiting
        if waiting is None:
            await self.handle(route, received)
        elif waiting.holds(received):  # an earlier event of its partition waits: it goes behind
            await waiting.hold(received, None)
        else:
            waits_for = await self.handle(route, received)
            if waits_for is not None:
                await waiting.hold(received, waits_for)
        if self.ready:  # rows that held events wait for were written
            await self.release()

    async def handle(self, route: Route, received: Received) -> tuple[str, str] | None:
        """Run the handler of ``route``; the (table, key) it waits for when it raised WaitForRow."""
        received._waiting = route.waiting
        token = enter(received)
        try:
            result = route.handler(received.event, received)
            if route.is_async:
                await result  # type: ignore[misc]  # an async handler's coroutine
            while received._pending:  # on_close coroutines the handler did not await
                await received._pending.pop(0)
        except SkipEvent:
            pass
        except WaitForRow as wait:
            return wait.table, wait.key
        finally:
            leave(token)
        return None

    async def release(self) -> None:
        while self.ready:
            waiting, partition = self.ready.pop()
            await waiting.drain(partition)

    async def tick(self, now_ms: float | None = None) -> None:
        """Every second: expire held events past their wait, release those whose row is there."""
        for route in self.routes:
            if route.waiting is not None:
                await route.waiting.tick(sorted(route.waiting.state.stores), now_ms)
        await self.release()

    # -- effects ------------------------------------------------------------------------------------

    def publish(self, event: Event, *, cause: Received, topic: EventTopic, key: str | None) -> Published:
        """See :meth:`evstream.streams.App.publish`."""
        cause._published += 1
        cause_id, correlation, parent = cause.cause()
        event_id = Published(bytes=uuid.uuid5(cause_id, f"{topic.name}/{cause._published}").bytes)
        cause_text = str(cause_id)
        headers = envelope_headers(
            event_id,
            type(event).event_type(),
            None,
            self.source,
            correlation or cause_text,
            cause_text,
            child_traceparent(parent),
        )
        value = topic.codec.encode(event)
        key_bytes = (key if key is not None else event.aggregate_id()).encode()
        self._out().produce(topic.name, key_bytes, value, _bytes_headers(headers))
        return event_id

    def forward(self, received: Received, topic: EventTopic, *, key: str | None = None) -> Sent[None]:
        """See :meth:`evstream.streams.App.forward`."""
        raw = received.raw
        pairs: Any = raw.headers() or []
        headers = [
            (k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in pairs if k != ORIGIN_HEADER
        ]
        if not any(k == "ce_id" for k, _ in headers):  # foreign: carry the derived envelope along
            headers += _bytes_headers(received.envelope.to_headers())
        headers.append((ORIGIN_HEADER, f"{received.origin}:{received.origin_offset}".encode()))
        if topic.name in self.by_topic:
            self._targets.add(topic.name)
            forwarded = self._forwarded
            forwarded[(topic.name, received.origin, received.origin_offset)] = received.event
            if len(forwarded) > FORWARD_CACHE:
                forwarded.popitem(last=False)  # the oldest (O(1); a dict's first key is not)
        self._out().produce(
            topic.name, key.encode() if key is not None else received.key, raw.value(), headers
        )
        return Sent(None)


def is_async(handler: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - an object with an async __call__
    )
