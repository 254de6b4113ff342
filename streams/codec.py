"""A faust codec that reads and writes evstream events: Confluent-framed Avro with registry ids.

Stream apps exchange the same bytes as ``EventProducer`` and ``ConsumerRunner`` (not faust's
own JSON Records): writing registers ``<topic>-<record name>`` like the producer does, reading
resolves the writer schema by id and validates into the catalog's model for that record name.
"""

from __future__ import annotations

from typing import Any

from faust.serializers.codecs import Codec

from evstream.errors import EncodeError, UnknownEventTypeError
from evstream.schemas import AvroCodec, Catalog, Event

__all__ = ["EventCodec"]


class EventCodec(Codec):
    """Event <-> bytes for one topic (the topic names the subject, as in ``EventProducer``)."""

    def __init__(self, topic: str, codec: AvroCodec, catalog: Catalog, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.topic = topic
        self.codec = codec
        self.by_name = {model.record_name(): model for model in catalog}
        self._encoders: dict[type[Event], Any] = {}
        self._decoders: dict[type[Event], Any] = {}

    def _dumps(self, obj: Any) -> bytes:
        if not isinstance(obj, Event):
            raise EncodeError(f"{self.topic}: only evstream events can be written, not {type(obj).__name__}")
        model = type(obj)
        encode = self._encoders.get(model)
        if encode is None:
            subject = f"{self.topic}-{model.record_name()}"
            encode = self._encoders[model] = self.codec.encoder(
                subject, model.avro_schema_dict(), strict=False
            )
        return bytes(encode(obj.model_dump()))

    def _loads(self, s: bytes) -> Any:
        name = self.codec.writer_name(s)
        model = self.by_name.get(name)
        if model is None:
            raise UnknownEventTypeError(f"{self.topic}: no model in the catalog for record {name!r}")
        decode = self._decoders.get(model)
        if decode is None:
            decode = self._decoders[model] = self.codec.decoder(model.avro_schema_dict())
        return model.model_validate(decode(s, None))
