"""A faust codec that reads and writes evstream events: Confluent-framed Avro with registry ids.

Stream apps exchange the same bytes as ``EventProducer`` and ``ConsumerRunner`` (not faust's
own JSON Records): writing registers the subject of the catalog's subject strategy like the
producer does, reading resolves the writer schema by id (the model cached per id) and validates
into the catalog's model for that record name (full name, else unambiguous short name), so a
foreign producer's Confluent-serialized records read the same way.
"""

from __future__ import annotations

from typing import Any

from faust.serializers.codecs import Codec

from evstream.errors import EncodeError, UnknownEventTypeError
from evstream.schemas import AvroCodec, Catalog, Event, EventReader

__all__ = ["EventCodec"]


class EventCodec(Codec):
    """Event <-> bytes for one topic (the topic names the subject, as in ``EventProducer``)."""

    def __init__(self, topic: str, codec: AvroCodec, catalog: Catalog, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.topic = topic
        self.codec = codec
        self.catalog = catalog
        self.reader = EventReader(codec, catalog)
        self._encoders: dict[type[Event], Any] = {}

    def _dumps(self, obj: Any) -> bytes:
        if not isinstance(obj, Event):
            raise EncodeError(f"{self.topic}: only evstream events can be written, not {type(obj).__name__}")
        model = type(obj)
        encode = self._encoders.get(model)
        if encode is None:
            subject = self.catalog.subject(model, self.topic)
            encode = self._encoders[model] = self.codec.encoder(
                subject, model.avro_schema_dict(), strict=False
            )
        return bytes(encode(obj.model_dump()))

    def _loads(self, s: bytes) -> Any:
        try:
            model = self.reader.model_for(s)
        except UnknownEventTypeError as exc:
            raise UnknownEventTypeError(f"{self.topic}: {exc}") from exc
        return self.reader.decode(model, s)
