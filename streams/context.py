"""The message being handled: :class:`Received`, and the record shape the engine reads.

A handler gets ``(event, received)``: the decoded event and where it came from (topic,
partition, offset, its envelope, and its *origin*: the source partition and offset it was first
read at, carried through re-keyed topics in the ``evs-origin`` header). Tables read the current
``Received`` from a context variable, so ``table.update(key, change)`` needs no extra argument.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Awaitable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from evstream.errors import ConfigError, EnvelopeError
from evstream.schemas import Envelope, Event
from evstream.schemas.events import check_traceparent

if TYPE_CHECKING:
    from evstream.streams.joins import Waiting

__all__ = [
    "ORIGIN_HEADER",
    "Published",
    "Received",
    "Record",
    "RecordLike",
    "Sent",
    "current_received",
    "header_pairs",
]

ORIGIN_HEADER = "evs-origin"
"""Header of a re-keyed record: ``topic:partition:offset`` of the record it was forwarded from."""

T = TypeVar("T")

_CAUSE_HEADERS = frozenset({"ce_id", "ce_type", "ce_correlationid", "traceparent"})

_RECEIVED: contextvars.ContextVar[Received | None] = contextvars.ContextVar("evstream_received", default=None)


class RecordLike(Protocol):
    """What the engine reads of a record: confluent-kafka's ``Message`` and :class:`Record`."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> Any: ...  # name/value pairs (confluent-kafka: list of tuples, or None)
    def timestamp(self) -> tuple[int, int]: ...


class Record:
    """A record held in memory (a held join event, the testing harness's input): the methods of
    confluent-kafka's ``Message`` that the engine uses."""

    __slots__ = ("_headers", "_key", "_offset", "_partition", "_timestamp", "_topic", "_value")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        timestamp_ms: int,
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._headers, self._timestamp = key, value, headers, timestamp_ms

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)  # TIMESTAMP_CREATE_TIME

    def error(self) -> None:
        return None


def header_pairs(record: RecordLike) -> list[tuple[str, bytes]]:
    """A record's headers as ``(name, bytes)`` pairs."""
    raw: Any = record.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in pairs]


@dataclass(slots=True)
class Received:
    """The event a handler is called with: its envelope and where it was read. The envelope is
    read from the headers when first asked for (a foreign record's is derived from its position)."""

    event: Event
    topic: str
    partition: int
    offset: int
    origin: str  # "topic:partition" the record was first read from (its own for a source topic)
    origin_offset: int
    raw: RecordLike = field(repr=False)  # the record as read (its bytes, key and headers)
    _published: int = 0
    _decisions: dict[tuple[int, Any], bool] = field(default_factory=dict, repr=False)
    _waiting: Waiting | None = field(default=None, repr=False)  # the handler's wait=, if any
    _expired: bool = False  # held past its wait: lookup(missing="wait") now returns None
    _pending: list[Awaitable[Any]] = field(default_factory=list, repr=False)  # on_close coroutines
    _envelope: Envelope | None = field(default=None, repr=False)

    @property
    def envelope(self) -> Envelope:
        if self._envelope is None:
            self._envelope = self._read_envelope()
        return self._envelope

    def _read_envelope(self) -> Envelope:
        try:
            return Envelope.from_headers(self.raw.headers())
        except EnvelopeError:  # a foreign producer's record: the envelope derived from its position
            source_topic, _, source_partition = self.origin.rpartition(":")
            stamp_type, stamp = self.raw.timestamp()
            return Envelope.derived(
                type(self.event).event_type(),
                source_topic,
                int(source_partition),
                self.origin_offset,
                stamp if stamp_type else None,
            )

    def cause(self) -> tuple[uuid.UUID, str | None, str | None]:
        """(event id, correlation id, traceparent) for a derived event, read without building
        the envelope when the headers carry them."""
        if self._envelope is None:
            found: dict[str, Any] = {}
            for name, value in self.raw.headers() or ():
                if name in _CAUSE_HEADERS:
                    found[name] = value.decode() if isinstance(value, bytes) else value
            if "ce_id" in found and "ce_type" in found:
                try:
                    parent = check_traceparent(found.get("traceparent"))
                    return uuid.UUID(found["ce_id"]), found.get("ce_correlationid"), parent
                except ValueError:
                    pass  # malformed: the envelope decides (derived for a foreign record)
        envelope = self.envelope
        return envelope.event_id, envelope.correlation_id, envelope.traceparent

    @property
    def key(self) -> bytes | None:
        return self.raw.key()

    @property
    def timestamp_ms(self) -> int:
        return self.raw.timestamp()[1]


def current_received() -> Received:
    """The event being handled; a ConfigError outside a handler."""
    received = _RECEIVED.get()
    if received is None:
        raise ConfigError("tables are updated inside a handler (@app.on), where the event is known")
    return received


def enter(received: Received) -> contextvars.Token[Received | None]:
    return _RECEIVED.set(received)


def leave(token: contextvars.Token[Received | None]) -> None:
    _RECEIVED.reset(token)


class Published(uuid.UUID):
    """The id of a derived event, already handed to the producer. Awaiting it is optional (it
    returns itself), so ``app.publish`` reads the same in ``async def`` and plain handlers."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, Published]:
        return self
        yield  # pragma: no cover - makes this a generator


class Sent(Generic[T]):
    """A forward (or window update) already done; awaiting it runs what it left to await (an
    ``on_close`` coroutine), so plain handlers may ignore it and async ones ``await`` it."""

    __slots__ = ("_pending", "result")

    def __init__(self, result: T, pending: list[Awaitable[Any]] | None = None) -> None:
        self.result = result
        self._pending = pending

    def __await__(self) -> Generator[Any, None, T]:
        while self._pending:
            yield from self._pending.pop(0).__await__()
        return self.result
