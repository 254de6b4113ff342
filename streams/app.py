"""The stream-processing API: an app, typed event topics, handlers, typed tables, windows, joins.

faust-streaming is the engine (consumer, agents, changelogs, recovery, rocksdb); this module is
what a user writes a processor with, without touching transports, codecs or headers::

    app = App("orders-app")                      # connection, codec, store... from the environment
    orders = app.events_topic("orders")          # Avro via the registry, typed by the catalog
    totals = app.table("totals", Totals)         # a pydantic model per key

    @app.on(orders, OrderPlaced)
    async def count(order: OrderPlaced, ctx: Received) -> None:
        totals.update(order.customer_id, lambda t: t.add(order))

**Exactly-once effect with constant-size state.** Each stored value carries, next to the user's
model, the offset of the last record applied to it *per origin partition* (the source topic's
partition the event was first read from; a re-keyed record carries its origin in a header). An
update whose origin offset is at or below the stored one was already applied and is skipped, so
a record processed again after a crash or rebalance (or forwarded twice to a re-keyed topic)
changes nothing, and a key's state holds at most one offset per origin partition, whatever its
history. The offset of the re-keyed topic itself would not do: a replayed forward lands at a new
offset there.

**Order of effects (at-least-once outputs, exactly-once state).** Table writes are kept in memory
and written to the changelog at each commit, *after* the producer was flushed (every derived
event of the events before them acknowledged) and *before* the offsets are committed (faust
flushes the changelog writes first). So a stored state never claims an event whose derived events
could have been lost; a crash before the write replays the events, which re-derive the same events
with the same ids (deterministic from the cause's id), so a consumer's dedupe store drops them.
Keys updated many times between commits cost one changelog record.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import inspect
import logging
import time
import uuid
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, NamedTuple, TypeVar

import faust
from faust.streams import _current_event
from faust.types import TP
from pydantic import BaseModel

from evstream.errors import ConfigError, EnvelopeError, EvstreamError
from evstream.schemas import AvroCodec, Catalog, Envelope, Event
from evstream.schemas.causation import child_traceparent
from evstream.schemas.events import envelope_headers
from evstream.settings import KafkaSettings, RegistrySettings, aiokafka_config
from evstream.streams import transport
from evstream.streams.codec import EventCodec
from evstream.streams.metrics import (
    JOIN_MISSING,
    JOIN_WAIT_EXPIRED,
    JOIN_WAITING,
    LATE_EVENTS,
    SKIPPED_UPDATES,
    WINDOWS_CLOSED,
)
from evstream.streams.settings import StreamsSettings

__all__ = [
    "App",
    "Change",
    "CopartitioningError",
    "EventTopic",
    "Received",
    "SkipEvent",
    "Table",
    "Wait",
    "WaitForRow",
    "Window",
    "WindowedTable",
    "broker_credentials",
    "current_received",
]

log = logging.getLogger("evstream.streams")

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Any, "Received"], Awaitable[None]]

ORIGIN_HEADER = "evs-origin"
"""Header of a re-keyed record: ``topic:partition:offset`` of the record it was forwarded from."""

_RECEIVED: contextvars.ContextVar[Received | None] = contextvars.ContextVar("evstream_received", default=None)


class CopartitioningError(ConfigError):
    """A stream is joined with a table whose partitions do not line up with the stream's."""

    def __init__(self, message: str, *, topics: dict[str, int]) -> None:
        super().__init__(message)
        self.topics = topics


class SkipEvent(EvstreamError):
    """Raised in a handler (``Table.lookup(..., missing="skip")``): the event has no effect."""


class WaitForRow(EvstreamError):
    """Raised by ``Table.lookup(key, missing="wait")`` when the row is missing: the event is held
    and its handler runs again, from the start, once the row arrives (let it propagate)."""

    def __init__(self, table: str, key: str) -> None:
        super().__init__(f"{table}: no row for {key!r} yet; the event waits for it")
        self.table = table
        self.key = key


WaitThen = Literal["emit_without", "skip", "dead_letter"]


@dataclass(frozen=True, slots=True)
class Wait:
    """How long the events of a handler (``app.on(..., wait=Wait(...))``) wait for a missing row
    of a ``lookup(key, missing="wait")``, and what happens then.

    - ``max_wait``: from the event's arrival (wall clock) until ``then`` is applied to it;
    - ``max_events``: events held per partition; one more applies ``then`` to the oldest at once;
    - ``then``: ``"emit_without"`` (the handler runs with the lookup returning None, a left
      join's null), ``"skip"`` (no effect, an inner join's drop) or ``"dead_letter"`` (forwarded
      as it was to ``<app id>-<handler>-unjoined``).
    """

    max_wait: timedelta
    max_events: int = 1000
    then: WaitThen = "emit_without"

    def __post_init__(self) -> None:
        if self.max_events < 1 or self.max_wait <= timedelta(0):
            raise ConfigError(f"Wait needs max_wait > 0 and max_events >= 1, not {self}")


@dataclass(slots=True)
class Received:
    """The event a handler is called with: its envelope and where it was read."""

    event: Event
    envelope: Envelope
    topic: str
    partition: int
    offset: int
    origin: str  # "topic:partition" the record was first read from (its own for a source topic)
    origin_offset: int
    raw: Any = field(repr=False)  # faust's event (its message holds the raw bytes)
    _published: int = 0
    _decisions: dict[tuple[int, Any], bool] = field(default_factory=dict, repr=False)
    _waiting: _Waiting | None = field(default=None, repr=False)  # the handler's wait=, if any
    _expired: bool = False  # held past its wait: lookup(missing="wait") now returns None

    @property
    def key(self) -> bytes | None:
        key = self.raw.message.key
        return key if isinstance(key, bytes | None) else str(key).encode()


def current_received() -> Received:
    """The event being handled; a ConfigError outside a handler."""
    received = _RECEIVED.get()
    if received is None:
        raise ConfigError("tables are updated inside a handler (@app.on), where the event is known")
    return received


def _headers(raw: Any) -> list[tuple[str, bytes]]:
    items = raw.items() if isinstance(raw, dict) else raw or []
    return [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in items]


def broker_credentials(kafka: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    """faust's ``broker_credentials`` for ``kafka``: the connection of :func:`aiokafka_config`
    (SASL user, password and mechanism; an ``ssl.SSLContext`` that verifies the brokers). faust
    hands them to every aiokafka client it makes (consumer, producer, topic creation); None for
    PLAINTEXT. The password is read here (from ``EVSTREAM_SASL_PASSWORD_FILE`` when given)."""
    protocol = kafka.security_protocol
    if protocol == "PLAINTEXT":
        return None
    conf = aiokafka_config(kafka)
    if protocol == "SSL":
        return faust.SSLCredentials(conf["ssl_context"])
    if kafka.sasl_mechanism == "OAUTHBEARER":
        raise ConfigError(
            "a stream app cannot use SASL OAUTHBEARER (faust needs a token provider): use PLAIN or SCRAM"
        )
    return faust.SASLCredentials(
        username=conf["sasl_plain_username"],
        password=conf["sasl_plain_password"],
        ssl_context=conf.get("ssl_context"),  # None: SASL_PLAINTEXT
        mechanism=conf["sasl_mechanism"],
    )


class EventTopic:
    """A topic of evstream events (Confluent-framed Avro, subjects by the catalog's strategy)."""

    def __init__(
        self,
        name: str,
        topic: faust.TopicT,
        partitions: int | None,
        *,
        internal: bool = False,
        codec: EventCodec | None = None,
    ) -> None:
        self.name = name
        self.faust = topic
        self.partitions = partitions
        self.codec = codec
        self._undeclared = internal  # the app's own: created on first use (faust only creates consumed ones)

    async def send(self, **message: Any) -> None:
        if self._undeclared:
            await self.faust.maybe_declare()
            self._undeclared = False
        await self.faust.send(**message)

    def __repr__(self) -> str:
        return f"EventTopic({self.name!r})"


class Change(NamedTuple, Generic[M]):
    """What an applied update did: the value before (the model's default when new) and after."""

    before: M
    after: M


@dataclass(slots=True)
class _Pending:
    value: dict[str, Any] | None  # the stored record, None: delete
    model: BaseModel | None  # the user's value, kept to skip a validation on the next read
    event: Any  # faust's event: the changelog partition is its partition


class _State(Generic[M]):
    """A faust table of ``{"v": model, "o": {origin: offset}}`` with write-behind at commit."""

    def __init__(self, app: App, name: str, model: type[M], partitions: int) -> None:
        self.app = app
        self.name = name
        self.model = model
        self.partitions = partitions
        self.faust: Any = app.faust.Table(name, default=None, partitions=partitions)
        self._dirty: dict[Any, _Pending] = {}
        self._inflight: dict[Any, _Pending] = {}
        app._states.append(self)

    def _stored(self, key: Any) -> tuple[dict[str, Any] | None, BaseModel | None]:
        pending = self._dirty.get(key) or self._inflight.get(key)
        if pending is not None:
            return pending.value, pending.model
        return self.faust.get(key), None

    def _decide(self, received: Received, key: Any, stored: dict[str, Any] | None) -> bool:
        """True when this event's update of ``key`` is new (decided once per event and key)."""
        slot = (id(self), key)
        decided = received._decisions.get(slot)
        if decided is None:
            done = (
                stored is not None and stored.get("o", {}).get(received.origin, -1) >= received.origin_offset
            )
            decided = received._decisions[slot] = not done
            if done:
                SKIPPED_UPDATES.labels(self.name).inc()
        return decided

    def _put(
        self, key: Any, value: dict[str, Any] | None, model: BaseModel | None, received: Received
    ) -> None:
        self._dirty[key] = _Pending(value, model, received.raw)

    def flush_pending(self, assigned: set[Any]) -> int:
        """Write the in-flight values to the faust table (changelog); returns how many."""
        written = 0
        for key, pending in self._inflight.items():
            tp = pending.event.message.tp
            if tp not in assigned:  # revoked: its offsets are not committed either; the owner replays
                continue
            token = _current_event.set(weakref.ref(pending.event))
            try:
                if pending.value is None:
                    if key in self.faust:
                        del self.faust[key]
                else:
                    self.faust[key] = pending.value
            finally:
                _current_event.reset(token)
            written += 1
        self._inflight = {}
        return written


class Table(_State[M]):
    """Per-key state typed by a pydantic model, updated at most once per event."""

    def __init__(self, app: App, name: str, model: type[M], partitions: int) -> None:
        super().__init__(app, name, model, partitions)
        self._waiters: list[_Waiting] = []  # handlers whose events wait for rows of this table

    def get(self, key: str) -> M | None:
        """The value of ``key`` (None when absent)."""
        stored, model = self._stored(key)
        if stored is None:
            return None
        return model if isinstance(model, self.model) else self.model.model_validate(stored["v"])

    def lookup(
        self, key: str, *, missing: Literal["skip", "emit_without", "wait"] = "emit_without"
    ) -> M | None:
        """A stream-table join: the row for ``key``. A missing row: ``"emit_without"`` returns
        None (the handler goes on without it); ``"skip"`` raises :class:`SkipEvent` (the event has
        no effect); ``"wait"`` raises :class:`WaitForRow`: the event is held until the row arrives
        (see :class:`Wait`; the handler must be declared with ``wait=`` and this table in its
        ``lookups``, and call this before its updates and publishes). Each miss is counted in
        ``evstream_stream_join_missing_total{table,missing}``."""
        row = self.get(key)
        if row is not None:
            return row
        if missing == "wait":
            received = current_received()
            waiting = received._waiting
            if waiting is None or self not in waiting.route.lookups:
                raise ConfigError(
                    f"{self.name}: lookup(missing='wait') needs its handler declared with "
                    "app.on(..., lookups=[this table], wait=Wait(...))"
                )
            if received._expired:  # waited long enough: emit without it
                return None
            if received._decisions or received._published:
                raise ConfigError(
                    f"{self.name}: call lookup(missing='wait') before the handler's updates and "
                    "publishes (a held event's handler runs again from the start)"
                )
            raise WaitForRow(self.name, key)
        JOIN_MISSING.labels(self.name, missing).inc()
        if missing == "skip":
            raise SkipEvent(f"{self.name}: no row for {key!r}")
        return None

    def update(self, key: str, change: Callable[[M], M]) -> Change[M] | None:
        """Apply ``change`` to the value of ``key`` (the model's defaults when absent) unless this
        event was already applied to it; returns the change, or None for an event applied before."""
        received = current_received()
        stored, model = self._stored(key)
        if not self._decide(received, key, stored):
            return None
        if stored is None:
            before: M = self.model()
            offsets: dict[str, int] = {}
        else:
            before = model if isinstance(model, self.model) else self.model.model_validate(stored["v"])
            offsets = stored.get("o", {})
        after = change(before)
        record = {
            "v": after.model_dump(mode="json"),
            "o": {**offsets, received.origin: received.origin_offset},
        }
        self._put(key, record, after, received)
        for waiting in self._waiters:  # a held event may be waiting for this row
            waiting.row_written(self.name, key)
        return Change(before, after)

    def items(self) -> Iterator[tuple[str, M]]:
        """The stored values of the partitions this worker owns (pending writes included)."""
        seen = set()
        for source in (self._dirty, self._inflight):
            for key, pending in source.items():
                if key not in seen and pending.value is not None:
                    seen.add(key)
                    yield key, self.model.model_validate(pending.value["v"])
        for key, value in self.faust.items():
            if key not in seen and value is not None:
                yield key, self.model.model_validate(value["v"])


class Window(NamedTuple):
    start: datetime
    end: datetime


OnClose = Callable[[str, Window, Any, Received], Awaitable[None] | None]

_WATERMARK = "__watermark__#"


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


class WindowedTable(_State[M]):
    """Tumbling (``hop=None``) or hopping windows of event time per key, on bounded state.

    - An event belongs to every window ``[start, start + size)`` containing its time (starts are
      multiples of ``hop``, ``size`` for tumbling windows).
    - **Stream time** is kept per partition: the largest event time seen there (stored, so it
      survives restarts). A window **closes** when ``end + grace <= stream time``: its value is
      final, ``on_close(key, window, value, received)`` runs once (it may ``app.publish``), and
      it is kept, marked closed, until ``end + expires <= stream time``, when it is deleted.
    - A **late** event (every window it belongs to is closed) changes nothing: it is counted in
      ``evstream_stream_late_events_total`` and, when ``late_topic`` is given, forwarded there.
    - A key must be written from one partition only (as for any table); include the partition
      in the key for keys that arrive on several (``f"{currency}#p{received.partition}"``).
    """

    def __init__(
        self,
        app: App,
        name: str,
        model: type[M],
        partitions: int,
        *,
        size: timedelta,
        hop: timedelta | None,
        grace: timedelta,
        expires: timedelta,
        on_close: OnClose | None,
        late_topic: EventTopic | None,
    ) -> None:
        super().__init__(app, name, model, partitions)
        self.size, self.hop = _ms_delta(size), _ms_delta(hop or size)
        if self.hop > self.size or self.size % self.hop:
            raise ConfigError(f"{name}: the hop must divide the window size ({hop} vs {size})")
        self.grace, self.expires = _ms_delta(grace), max(_ms_delta(expires), _ms_delta(grace))
        self.on_close = on_close
        self.late_topic = late_topic
        self._open: dict[int, dict[str, tuple[int, bool]]] = {}  # partition -> stored key -> (end, closed)
        self._generation = -1

    @staticmethod
    def stored_key(key: str, start_ms: int) -> str:
        return f"{key}@{start_ms}"

    def windows_for(self, when: datetime) -> list[int]:
        """Start times (ms) of the windows ``when`` belongs to."""
        t = _ms(when)
        last = t - t % self.hop
        return [s for s in range(last - self.size + self.hop, last + 1, self.hop) if s <= t < s + self.size]

    def _index(self, partition: int) -> dict[str, tuple[int, bool]]:
        generation = self.app.faust.rebalancing_count
        if generation != self._generation:  # a rebalance: rebuild what is open from the tables
            self._generation, self._open = generation, {}
        index = self._open.get(partition)
        if index is None:
            index = self._open[partition] = {}
            for key, value in self.faust.items():
                if value is not None and value.get("p") == partition and "end" in value:
                    index[key] = (value["end"], value.get("closed", False))
            for key, pending in (*self._inflight.items(), *self._dirty.items()):
                if pending.event.message.partition == partition:
                    if pending.value is None:
                        index.pop(key, None)
                    elif "end" in pending.value:
                        index[key] = (pending.value["end"], pending.value.get("closed", False))
        return index

    def stream_time(self, partition: int) -> int | None:
        stored, _model = self._stored(f"{_WATERMARK}{partition}")
        return None if stored is None else int(stored["t"])

    def get(self, key: str, start: datetime) -> M | None:
        stored, model = self._stored(self.stored_key(key, _ms(start)))
        if stored is None:
            return None
        return model if isinstance(model, self.model) else self.model.model_validate(stored["v"])

    async def update(self, key: str, when: datetime, change: Callable[[M], M]) -> list[Change[M]]:
        """Apply ``change`` to each window of ``key`` that ``when`` falls in; then close and expire
        the windows stream time has passed. Returns the applied changes (none for a late event or
        one applied before)."""
        received = current_received()
        partition = received.partition
        index = self._index(partition)
        now = self.stream_time(partition)
        changes: list[Change[M]] = []
        late = 0
        starts = self.windows_for(when)
        for start in starts:
            end = start + self.size
            if now is not None and end + self.grace <= now:
                late += 1
                continue
            skey = self.stored_key(key, start)
            stored, model = self._stored(skey)
            if not self._decide(received, skey, stored):
                continue
            if stored is None:
                before: M = self.model()
                offsets: dict[str, int] = {}
            else:
                before = model if isinstance(model, self.model) else self.model.model_validate(stored["v"])
                offsets = stored.get("o", {})
            after = change(before)
            record = {
                "v": after.model_dump(mode="json"),
                "o": {**offsets, received.origin: received.origin_offset},
                "end": end,
                "p": partition,
                "closed": False,
            }
            self._put(skey, record, after, received)
            index[skey] = (end, False)
            changes.append(Change(before, after))
        if late and late == len(starts):
            LATE_EVENTS.labels(self.name).inc()
            if self.late_topic is not None:
                await self.app.forward(received, self.late_topic)
        t = _ms(when)
        if now is None or t > now:
            self._put(f"{_WATERMARK}{partition}", {"t": t}, None, received)
            await self._advance(partition, index, t, received)
        return changes

    async def _advance(
        self, partition: int, index: dict[str, tuple[int, bool]], now: int, received: Received
    ) -> None:
        for skey, (end, closed) in sorted(index.items(), key=lambda item: item[1][0]):
            if end + self.grace > now:
                break
            stored, model = self._stored(skey)
            if stored is None:
                index.pop(skey, None)
                continue
            if end + self.expires <= now:
                self._put(skey, None, None, received)
                index.pop(skey, None)
                continue
            if closed:
                continue
            value = model if isinstance(model, self.model) else self.model.model_validate(stored["v"])
            self._put(skey, {**stored, "closed": True}, value, received)
            index[skey] = (end, True)
            WINDOWS_CLOSED.labels(self.name).inc()
            if self.on_close is not None:
                key, _, start = skey.rpartition("@")
                window = Window(_dt(int(start)), _dt(end))
                result = self.on_close(key, window, value, received)
                if inspect.isawaitable(result):
                    await result


def _ms_delta(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


def _dt(ms: int) -> datetime:
    from datetime import UTC  # noqa: PLC0415 - only for window bounds

    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(slots=True)
class _Route:
    topic: EventTopic
    types: tuple[type[Event], ...]
    handler: Handler
    lookups: tuple[_State[Any], ...]
    updates: tuple[_State[Any], ...]
    waiting: _Waiting | None = None


class _Held(BaseModel):
    """(The held events are stored as plain records; the state's model is never used.)"""


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


class _RestoredMessage:
    """What the API and faust's tables read of a held record's message."""

    def __init__(self, topic: str, partition: int, entry: dict[str, Any]) -> None:
        self.topic, self.partition, self.offset = topic, partition, int(entry["o"])
        self.tp = TP(topic, partition)
        self.key, self.value = _unb64(entry["k"]), _unb64(entry["v"])
        self.timestamp = entry["ts"]
        self.headers = [(name, _unb64(value) or b"") for name, value in entry["h"]]


class _Restored:
    """A held record brought back as faust's event (a weakref-able stand-in: faust's table writes
    read the changelog partition from ``current_event().message``)."""

    def __init__(self, topic: str, partition: int, entry: dict[str, Any]) -> None:
        self.message = _RestoredMessage(topic, partition, entry)
        self.headers = self.message.headers
        self.value: Any = None


class _Waiting:
    """The events of one handler held for missing rows (``wait=Wait(...)``), per partition.

    **Head-of-line per partition.** Once an event of partition ``p`` waits, every later event of
    ``p`` is held behind it, in order, whatever its key: the state's offset dedupe (a key skips
    an origin offset at or below the one it stored) needs each origin partition's events applied
    in order, as they would have been without the wait. This is what Kafka Streams' stream-table
    join with a grace period does too (records buffered, processed in order). When the head's row
    is written (or the timer finds it), the held events run in order until one misses a row again.

    **Bounded and durable.** At most ``max_events`` per partition (one more applies ``then`` to the
    oldest); each waits at most ``max_wait`` from its arrival. The held records (bytes, headers,
    position) live in a changelogged table ``<handler>-waiting``, written at the commit with the
    other state and before the offsets that skip past them are committed, so a crash or a
    rebalance loses none (the next owner recovers the queue); a replayed record already held
    (offset at or below the last held one) is not held twice.
    """

    def __init__(self, app: App, route: _Route, wait: Wait, partitions: int) -> None:
        self.app, self.route, self.wait = app, route, wait
        self.name = route.handler.__name__
        self.state: _State[_Held] = _State(app, f"{self.name}-waiting", _Held, partitions)
        self.dead_letter = (
            app.events_topic(f"{app.app_id}-{self.name}-unjoined", partitions=partitions, internal=True)
            if wait.then == "dead_letter"
            else None
        )
        self._queues: dict[int, deque[tuple[str, dict[str, Any]]]] = {}
        self._generation = -1
        self._draining: dict[int, asyncio.Event] = {}  # partition -> set when its drain ends

    def queue(self, partition: int) -> deque[tuple[str, dict[str, Any]]]:
        """The held events of ``partition`` in order (rebuilt from the table after a rebalance)."""
        generation = self.app.faust.rebalancing_count
        if generation != self._generation:
            self._generation, self._queues = generation, {}
        found = self._queues.get(partition)
        if found is None:
            prefix = f"{partition}#"
            held: dict[str, dict[str, Any] | None] = {
                k: v for k, v in self.state.faust.items() if isinstance(k, str) and k.startswith(prefix)
            }
            for source in (self.state._inflight, self.state._dirty):
                held.update({k: pending.value for k, pending in source.items() if k.startswith(prefix)})
            found = self._queues[partition] = deque(sorted((k, v) for k, v in held.items() if v is not None))
        return found

    def holds(self, received: Received) -> bool:
        """True when ``received`` must wait behind held events (or is one of them, replayed)."""
        return bool(self.queue(received.partition))

    def count(self) -> None:
        JOIN_WAITING.labels(self.name).set(sum(len(q) for q in self._queues.values()))

    async def hold(self, received: Received, waits_for: tuple[str, str] | None) -> None:
        """Append ``received`` to its partition's queue (``waits_for``: the head's table and key)."""
        partition = received.partition
        q = self.queue(partition)
        if q and received.offset <= q[-1][1]["o"]:  # a replay of a held record
            return
        while len(q) >= self.wait.max_events:  # full: the oldest gets ``then`` now
            draining = self._draining.get(partition)
            if draining is not None:  # a drain is shrinking it: wait for its end
                await draining.wait()
            else:
                await self.drain(partition, expire=True)
            q = self.queue(partition)
        if not q and waits_for is None:  # the queue emptied meanwhile: nothing to wait behind
            waits_for = await self.app._handle(self.route, received)
            if waits_for is None:
                return
        raw = received.raw
        message = raw.message
        seq = int(q[-1][0].rpartition("#")[2]) + 1 if q else 0
        entry = {
            "o": received.offset,
            "k": _b64(received.key),
            "v": _b64(message.value),
            "h": [[k, _b64(v)] for k, v in _headers(raw.headers)],
            "ts": message.timestamp,
            "since": int(time.time() * 1000),
            "wt": waits_for[0] if waits_for else None,
            "wk": waits_for[1] if waits_for else None,
        }
        skey = f"{partition}#{seq:012d}"
        q.append((skey, entry))
        self.state._put(skey, entry, None, received)
        if waits_for is not None:
            JOIN_MISSING.labels(waits_for[0], "wait").inc()
        self.count()

    def row_written(self, table: str, key: str) -> None:
        for partition, q in self._queues.items():
            if q and q[0][1]["wt"] == table and q[0][1]["wk"] == key:
                self.app._ready.add((self, partition))

    def restore(self, partition: int, entry: dict[str, Any]) -> Received:
        raw = _Restored(self.route.topic.name, partition, entry)
        codec = self.route.topic.codec
        assert codec is not None  # events_topic gives every topic one
        assert raw.message.value is not None  # a held record has its bytes
        raw.value = event = codec.loads(raw.message.value)
        received = self.app._received(raw, event, self.route.topic.name)
        received._waiting = self
        return received

    async def drain(self, partition: int, *, expire: bool = False) -> None:
        """Run the held events of ``partition`` in order until one misses a row again (``expire``:
        apply ``then`` to the head first). An event leaves the queue only once handled, so the
        partition's new events keep queueing behind it meanwhile."""
        if partition in self._draining:
            return
        self._draining[partition] = asyncio.Event()
        try:
            q = self.queue(partition)
            while q:
                skey, entry = q[0]
                received = self.restore(partition, entry)
                if expire:
                    await self._expire(received)
                    expire = False
                else:
                    waits_for = await self.app._handle(self.route, received)
                    if waits_for is not None:  # the head misses a row (again): it waits on
                        if (entry["wt"], entry["wk"]) != waits_for:
                            entry = {**entry, "wt": waits_for[0], "wk": waits_for[1]}
                            q[0] = (skey, entry)
                            self.state._put(skey, entry, None, received)
                            JOIN_MISSING.labels(waits_for[0], "wait").inc()
                        return
                q.popleft()
                self.state._put(skey, None, None, received)
        finally:
            self._draining.pop(partition).set()
            self.count()

    async def _expire(self, received: Received) -> None:
        then = self.wait.then
        JOIN_WAIT_EXPIRED.labels(self.name, then).inc()
        if then == "emit_without":
            received._expired = True
            await self.app._handle(self.route, received)
        elif then == "dead_letter":
            assert self.dead_letter is not None
            await self.app.forward(received, self.dead_letter)

    async def tick(self, partitions: Iterable[int], now_ms: float | None = None) -> None:
        """Per assigned partition: expire a head that waited ``max_wait``, release one whose row
        is there now (written by another worker's recovery, or a write the hook missed)."""
        now = time.time() * 1000 if now_ms is None else now_ms
        limit = self.wait.max_wait.total_seconds() * 1000
        for partition in partitions:
            q = self.queue(partition)
            while q and partition not in self._draining and now - q[0][1]["since"] >= limit:
                await self.drain(partition, expire=True)  # and the ones behind it that find rows
            if not q or partition in self._draining:
                continue
            head = q[0][1]
            table = next((t for t in self.route.lookups if t.name == head["wt"]), None)
            if isinstance(table, Table) and table.get(head["wk"]) is not None:
                await self.drain(partition)
        self.count()  # queues recovered after a restart or rebalance are counted from here


class App:
    """A stream processor: topics, tables and handlers on one faust app.

    ``app_id`` names the consumer group and prefixes the app's topics; ``EVSTREAM_STREAMS_APP_ID``
    overrides it, so one module runs as several deployments.

    Connection, registry, codec, store and worker settings come from the environment
    (``EVSTREAM_BOOTSTRAP_SERVERS``, ``EVSTREAM_REGISTRY_URL``, ``EVSTREAM_STREAMS_*``) unless
    given; the catalog is the project's (``EVSTREAM_CATALOG`` / ``[tool.evstream]``). No I/O
    here: the worker (``evstream worker module:app``) connects.
    """

    def __init__(
        self,
        app_id: str | None = None,
        *,
        catalog: Catalog | None = None,
        settings: StreamsSettings | None = None,
        kafka: KafkaSettings | None = None,
        registry: RegistrySettings | None = None,
        source: str | None = None,
    ) -> None:
        self.settings = settings or StreamsSettings()
        # the environment (EVSTREAM_STREAMS_APP_ID) names a deployment; the code's id is the default
        env_id = self.settings.app_id if "app_id" in self.settings.model_fields_set else None
        self.app_id = env_id or app_id or self.settings.app_id
        self.kafka = kafka or KafkaSettings()
        self.registry = registry or RegistrySettings()
        self._catalog = catalog
        self.source = source or self.app_id
        self._codec: AvroCodec | None = None
        self._states: list[_State[Any]] = []
        self._routes: list[_Route] = []
        self._topics: dict[str, EventTopic] = {}
        self._ready: set[tuple[_Waiting, int]] = set()  # partitions whose held events may go on
        servers = self.kafka.bootstrap_servers.split(",")
        self.faust = faust.App(
            self.app_id,
            broker=[f"kafka://{server}" for server in servers],
            broker_consumer=[f"{transport.SCHEME}://{server}" for server in servers],
            broker_credentials=broker_credentials(self.kafka),
            broker_client_id=self.kafka.client_id,
            store=self.settings.store,
            datadir=str(self.settings.data_dir or f"{self.app_id}-data"),
            processing_guarantee="at_least_once",
            topic_partitions=self.settings.partitions,
            topic_replication_factor=self.settings.replication_factor,
            web_enabled=False,  # the worker serves /healthz, /readyz and /metrics itself
            key_serializer="raw",
            value_serializer="raw",
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=self.settings.session_timeout_s,
            broker_heartbeat_interval=min(3.0, self.settings.session_timeout_s / 3),
            broker_commit_interval=self.settings.commit_interval_s,
            producer_linger_ms=self.settings.producer_linger_ms,
        )
        self.faust.evstream_checkpoint = self._checkpoint  # type: ignore[attr-defined]  # read by transport.Consumer

    # -- declarations -------------------------------------------------------------------------------

    @property
    def conf(self) -> Any:
        """faust's settings (the worker reads the store and data dir from here)."""
        return self.faust.conf

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            from evstream.settings import project_catalog  # noqa: PLC0415 - resolved on first use

            self._catalog = project_catalog()
        return self._catalog

    def _avro(self) -> AvroCodec:
        if self._codec is None:
            from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: PLC0415

            from evstream.schemas import RegistrySchemaStore  # noqa: PLC0415

            self._codec = AvroCodec(RegistrySchemaStore(SchemaRegistryClient(self.registry.client_config())))
        return self._codec

    def events_topic(self, name: str, *, partitions: int | None = None, internal: bool = False) -> EventTopic:
        """A topic of catalog events. ``internal=True``: the app's own (created by the worker with
        ``partitions``, default ``EVSTREAM_STREAMS_PARTITIONS``), e.g. a re-keyed stream."""
        if internal and partitions is None:
            partitions = self.settings.partitions
        codec = EventCodec(name, resolve=lambda: (self._avro(), self.catalog))  # registry on first use
        options: dict[str, Any] = {"partitions": partitions, "internal": True} if internal else {}
        found = EventTopic(
            name,
            self.faust.topic(name, value_serializer=codec, **options),
            partitions,
            internal=internal,
            codec=codec,
        )
        self._topics[name] = found
        return found

    def table(self, name: str, model: type[M], *, partitions: int | None = None) -> Table[M]:
        """Per-key state typed by ``model`` (its defaults are a new key's value)."""
        return Table(self, name, model, partitions or self.settings.partitions)

    def windowed_table(
        self,
        name: str,
        model: type[M],
        *,
        size: timedelta,
        hop: timedelta | None = None,
        grace: timedelta = timedelta(0),
        expires: timedelta | None = None,
        on_close: OnClose | None = None,
        late_topic: EventTopic | None = None,
        partitions: int | None = None,
    ) -> WindowedTable[M]:
        """Tumbling (or, with ``hop``, hopping) windows of event time; see :class:`WindowedTable`."""
        return WindowedTable(
            self,
            name,
            model,
            partitions or self.settings.partitions,
            size=size,
            hop=hop,
            grace=grace,
            expires=expires if expires is not None else size + grace,
            on_close=on_close,
            late_topic=late_topic,
        )

    def on(
        self,
        topic: EventTopic,
        *types: type[Event],
        lookups: Iterable[_State[Any]] = (),
        updates: Iterable[_State[Any]] = (),
        wait: Wait | None = None,
    ) -> Callable[[Handler], Handler]:
        """Call the decorated ``handler(event, received)`` for each event of ``topic`` (of
        ``types`` only, when given; others pass by). ``lookups``: tables it joins with, checked
        for co-partitioning at start; ``updates``: tables it writes (also checked); ``wait``: how
        its ``lookup(key, missing="wait")`` calls hold events for missing rows (:class:`Wait`)."""

        def register(handler: Handler) -> Handler:
            route = _Route(topic, types, handler, tuple(lookups), tuple(updates))
            if wait is not None:
                tables = [t for t in route.lookups if isinstance(t, Table)]
                if not tables:
                    raise ConfigError(f"{handler.__name__}: wait= needs the tables it waits for in lookups=")
                route.waiting = _Waiting(self, route, wait, tables[0].partitions)
                for table in tables:
                    table._waiters.append(route.waiting)
                if not any(r.waiting for r in self._routes):
                    self.faust.timer(1.0)(self._tick_waits)
            self._routes.append(route)
            self._agent(route)
            return handler

        return register

    def group_by(
        self,
        topic: EventTopic,
        *types: type[Event],
        key: Callable[[Any], str],
        name: str,
        partitions: int | None = None,
    ) -> EventTopic:
        """Re-key ``topic`` (events of ``types``) by ``key(event)``: returns the internal topic
        ``<app_id>-<name>`` (``partitions``, default ``EVSTREAM_STREAMS_PARTITIONS``) that a
        handler (``on(returned, ...)``) reads, and registers the handler that forwards each event
        there (:meth:`forward`: bytes, envelope and origin kept). faust's ``group_by``, typed."""
        target = self.events_topic(f"{self.app_id}-{name}", partitions=partitions, internal=True)

        async def rekey(event: Any, received: Received) -> None:
            await self.forward(received, target, key=key(event))

        rekey.__name__ = f"group_by_{name}"
        self.on(topic, *types)(rekey)
        return target

    def _agent(self, route: _Route) -> None:
        topic, types, handler = route.topic.name, route.types, route.handler

        async def agent(stream: faust.StreamT[Any]) -> None:
            async for raw in stream.events():
                event = raw.value
                if types and not isinstance(event, types):
                    continue
                await self._process(route, self._received(raw, event, topic))

        agent.__name__ = agent.__qualname__ = handler.__name__
        self.faust.agent(route.topic.faust, name=f"{self.app_id}.{handler.__name__}")(agent)

    async def _process(self, route: _Route, received: Received) -> None:
        """Handle one event of ``route`` (or hold it, with ``wait=``), then release held events
        whose rows it wrote."""
        waiting = route.waiting
        if waiting is None:
            await self._handle(route, received)
        elif waiting.holds(received):  # an earlier event of its partition waits: it goes behind
            await waiting.hold(received, None)
        else:
            waits_for = await self._handle(route, received)
            if waits_for is not None:
                await waiting.hold(received, waits_for)
        if self._ready:  # rows that held events wait for were written
            await self._release()

    async def _handle(self, route: _Route, received: Received) -> tuple[str, str] | None:
        """Run the handler of ``route``; the (table, key) it waits for when it raised WaitForRow."""
        received._waiting = route.waiting
        token = _RECEIVED.set(received)
        try:
            await route.handler(received.event, received)
        except SkipEvent:
            pass
        except WaitForRow as wait:
            return wait.table, wait.key
        finally:
            _RECEIVED.reset(token)
        return None

    async def _release(self) -> None:
        while self._ready:
            waiting, partition = self._ready.pop()
            await waiting.drain(partition)

    async def _tick_waits(self) -> None:
        """Every second: expire held events past their wait, release those whose row is there."""
        recovery = getattr(self.faust.tables, "recovery", None)
        if self.faust.rebalancing or (recovery is not None and not recovery.completed.is_set()):
            return  # the queues are rebuilt from the recovered tables once this ends
        assignment = self.faust.consumer.assignment()
        for route in self._routes:
            if route.waiting is not None:
                mine = sorted(tp.partition for tp in assignment if tp.topic == route.topic.name)
                await route.waiting.tick(mine)
        await self._release()

    @staticmethod
    def _received(raw: Any, event: Event, topic: str) -> Received:
        message = raw.message
        headers = _headers(raw.headers)
        origin, origin_offset = f"{topic}:{message.partition}", message.offset
        for name, value in headers:
            if name == ORIGIN_HEADER:
                where, _, offset = value.decode().rpartition(":")
                origin, origin_offset = where, int(offset)
                break
        try:
            envelope = Envelope.from_headers(headers)
        except EnvelopeError:  # a foreign producer's record: the envelope derived from its position
            source_topic, _, source_partition = origin.rpartition(":")
            stamp = message.timestamp
            envelope = Envelope.derived(
                type(event).event_type(),
                source_topic,
                int(source_partition),
                origin_offset,
                int(stamp * 1000) if stamp is not None else None,
            )
        return Received(event, envelope, topic, message.partition, message.offset, origin, origin_offset, raw)

    # -- effects ------------------------------------------------------------------------------------

    def _topic_of(self, event: Event, topic: EventTopic | None) -> EventTopic:
        if topic is not None:
            return topic
        name = type(event).topic
        found = self._topics.get(name or "")
        if found is None:
            raise ConfigError(f"{type(event).__name__}: declare its topic with app.events_topic({name!r})")
        return found

    async def publish(
        self, event: Event, *, cause: Received, topic: EventTopic | None = None, key: str | None = None
    ) -> uuid.UUID:
        """Publish a derived event; its envelope continues the cause's (correlation id, causation
        id = the cause's event id, traceparent a child span of the cause's). Its id is derived from
        the cause's id and the publish's position in the handler, so an event processed again
        re-emits the same ids (a consumer's dedupe store drops them); returns the id."""
        target = self._topic_of(event, topic)
        cause._published += 1
        event_id = uuid.uuid5(cause.envelope.event_id, f"{target.name}/{cause._published}")
        envelope = cause.envelope
        headers = envelope_headers(
            event_id,
            type(event).event_type(),
            None,
            self.source,
            envelope.correlation_id or str(envelope.event_id),
            str(envelope.event_id),
            child_traceparent(envelope.traceparent),
        )
        await target.send(
            key=(key if key is not None else event.aggregate_id()).encode(),
            value=event,
            headers=[(k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in headers],
        )
        return event_id

    async def forward(self, received: Received, topic: EventTopic, *, key: str | None = None) -> None:
        """Send the received record (its bytes, envelope and origin) to ``topic``, re-keyed by
        ``key``: the usual way to re-partition a stream (``route(order) -> by customer``)."""
        headers = [(k, v) for k, v in _headers(received.raw.headers) if k != ORIGIN_HEADER]
        if not any(k == "ce_id" for k, _ in headers):  # foreign: carry the derived envelope along
            headers += [
                (k, v if isinstance(v, bytes) else (v or "").encode())
                for k, v in received.envelope.to_headers()
            ]
        headers.append((ORIGIN_HEADER, f"{received.origin}:{received.origin_offset}".encode()))
        await topic.send(
            key=key.encode() if key is not None else received.key,
            value=received.raw.message.value,
            value_serializer="raw",
            headers=headers,
        )

    async def _checkpoint(self) -> None:
        """Before faust commits: derived events acknowledged, then the state they came with."""
        states = [s for s in self._states if s._dirty]
        if not states:
            return
        for state in states:
            state._inflight, state._dirty = state._dirty, {}
        await self.faust.producer.flush()
        assigned = set(self.faust.consumer.assignment())
        for state in states:
            state.flush_pending(assigned)

    # -- start-up checks ----------------------------------------------------------------------------

    def check_copartitioning(self, partitions_of: Callable[[str], int | None]) -> None:
        """Every stream joined with (or writing) a table has the table's partition count;
        :class:`CopartitioningError` names the topics otherwise. ``partitions_of`` reads a topic's
        count (None: not created yet, then the declared count is used)."""
        for route in self._routes:
            tables = (*route.lookups, *route.updates)
            if not tables:
                continue
            count = partitions_of(route.topic.name) or route.topic.partitions
            for table in tables:
                if count is not None and count != table.partitions:
                    found = {
                        route.topic.name: count,
                        f"{self.app_id}-{table.name}-changelog": table.partitions,
                    }
                    raise CopartitioningError(
                        f"{route.handler.__name__}: {route.topic.name} has {count} partitions but table "
                        f"{table.name!r} has {table.partitions}: a key's row would live on another "
                        "partition than its events. Re-key the stream (app.forward to an internal "
                        "topic with the table's partitions) or give the table the topic's count.",
                        topics=found,
                    )

    def preflight(self, timeout: float = 30.0) -> None:
        """The start-up checks against the cluster (run by ``evstream worker``)."""
        from confluent_kafka.admin import AdminClient  # noqa: PLC0415

        from evstream.settings import librdkafka_config  # noqa: PLC0415

        admin = AdminClient(librdkafka_config(self.kafka))
        metadata = admin.list_topics(timeout=timeout).topics

        def partitions_of(name: str) -> int | None:
            found = metadata.get(name)
            return None if found is None or found.error is not None else len(found.partitions)

        self.check_copartitioning(partitions_of)

    def routes(self) -> Sequence[tuple[str, tuple[str, ...]]]:
        """(topic, event types) of each handler, for diagnostics."""
        return [(r.topic.name, tuple(t.__name__ for t in r.types)) for r in self._routes]
