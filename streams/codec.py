"""A faust codec that reads and writes evstream events: Confluent-framed Avro with registry ids.

Stream apps exchange the same bytes as ``EventProducer`` and ``ConsumerRunner`` (not faust's
own JSON Records): writing registers the subject of the catalog's subject strategy like the
producer does, reading resolves the writer schema by id (the model cached per id) and validates
into the catalog's model for that record name (full name, else unambiguous short name), so a
foreign producer's Confluent-serialized records read the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faust.serializers.codecs import Codec

from evstream.errors import ConfigError, EncodeError, UnknownEventTypeError
from evstream.schemas import AvroCodec, Catalog, Event, EventReader

__all__ = ["EventCodec"]


class EventCodec(Codec):
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if resolve is None and (codec is None or catalog is None):
            raise ConfigError(f"{topic}: EventCodec needs codec and catalog, or resolve")
        self.topic = topic
        self._resolve = resolve
        self._reader: EventReader | None = None
        self._catalog = catalog
        self._codec = codec
        self._encoders: dict[type[Event], Any] = {}

    def _bind(self) -> tuple[AvroCodec, Catalog, EventReader]:
        if self._codec is None or self._catalog is None:
            assert self._resolve is not None
            self._codec, self._catalog = self._resolve()
        if self._reader is None:
            self._reader = EventReader(self._codec, self._catalog)
        return self._codec, self._catalog, self._reader

    def _dumps(self, obj: Any) -> bytes:
        if not isinstance(obj, Event):
            raise EncodeError(f"{self.topic}: only evstream events can be written, not {type(obj).__name__}")
        model = type(obj)
        encode = self._encoders.get(model)
        if encode is None:
            codec, catalog, _reader = self._bind()
            subject = catalog.subject(model, self.topic)
            encode = self._encoders[model] = codec.encoder(subject, model.avro_schema_dict(), strict=False)
        return bytes(encode(obj.model_dump()))

    def _loads(self, s: bytes) -> Any:
        reader = self._reader or self._bind()[2]
        try:
            model = reader.model_for(s)
        except UnknownEventTypeError as exc:
            raise UnknownEventTypeError(f"{self.topic}: {exc}") from exc
        return reader.decode(model, s)
