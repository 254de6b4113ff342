"""Event topics of a stream app and their codec: Confluent-framed Avro with registry ids.

Stream apps exchange the same bytes as ``EventProducer`` and ``ConsumerRunner``: writing
registers the subject of the catalog's subject strategy like the producer does, reading
resolves the writer schema by id (the model cached per id) and validates into the catalog's
model for that record name (full name, else unambiguous short name), so a foreign producer's
Confluent-serialized records read the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from evstream.errors import ConfigError, EncodeError, UnknownEventTypeError
from evstream.schemas import AvroCodec, Catalog, Event, EventReader

__all__ = ["EventTopic", "StreamCodec"]


class StreamCodec:
    """Event <-> bytes for one topic (the topic names the subject, as in ``EventProducer``).

    Give ``codec`` and ``catalog``, or ``resolve`` returning both on first use (the stream API
    does: no registry client is made before the worker runs).
    """

    def __init__(
        self,
        topic: str,
        codec: AvroCodec | None = None,
        catalog: Catalog | None = None,
        *,
        resolve: Callable[[], tuple[AvroCodec, Catalog]] | None = None,
    ) -> None:
        if resolve is None and (codec is None or catalog is None):
            raise ConfigError(f"{topic}: a stream codec needs codec and catalog, or resolve")
        self.topic = topic
        self._resolve = resolve
        self._reader: EventReader | None = None
        self._catalog = catalog
        self._codec = codec
        self._encoders: dict[type[Event], Callable[[dict[str, Any]], bytes]] = {}

    def _bind(self) -> tuple[AvroCodec, Catalog, EventReader]:
        if self._codec is None or self._catalog is None:
            assert self._resolve is not None
            self._codec, self._catalog = self._resolve()
        if self._reader is None:
            self._reader = EventReader(self._codec, self._catalog)
        return self._codec, self._catalog, self._reader

    def encode(self, event: Any) -> bytes:
        if not isinstance(event, Event):
            raise EncodeError(
                f"{self.topic}: only evstream events can be written, not {type(event).__name__}"
            )
        model = type(event)
        encode = self._encoders.get(model)
        if encode is None:
            codec, catalog, _reader = self._bind()
            subject = catalog.subject(model, self.topic)
            encode = self._encoders[model] = codec.encoder(subject, model.avro_schema_dict(), strict=False)
        return bytes(encode(event.model_dump()))

    def model_for(self, payload: bytes) -> type[Event]:
        """The catalog model ``payload`` was written as (by its writer schema id: cached)."""
        reader = self._reader or self._bind()[2]
        try:
            return reader.model_for(payload)
        except UnknownEventTypeError as exc:
            raise UnknownEventTypeError(f"{self.topic}: {exc}") from exc

    def decode(self, payload: bytes, model: type[Event] | None = None) -> Event:
        reader = self._reader or self._bind()[2]
        return reader.decode(model or self.model_for(payload), payload)


class EventTopic:
    """A topic of evstream events. ``internal``: the app's own (the worker creates it with
    ``partitions``), such as a re-keyed stream."""

    def __init__(self, name: str, partitions: int | None, *, internal: bool, codec: StreamCodec) -> None:
        self.name = name
        self.partitions = partitions
        self.internal = internal
        self.codec = codec

    def __repr__(self) -> str:
        return f"EventTopic({self.name!r})"
