"""Read records into catalog events, with or without an evstream envelope.

evstream's own records carry the event type in the ``ce_type`` header. A record from a foreign
producer (Confluent's standard serializer in Java, Go or Python) carries none: its type is the
record name of its writer schema, looked up by the schema id in its Confluent header (once per
id), and its envelope is derived from where it was read (:meth:`Envelope.derived`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from evstream.schemas.catalog import Catalog
from evstream.schemas.codec import AvroCodec, RecordCoordinates
from evstream.schemas.events import Event

__all__ = ["EventReader", "event_type_header"]

Decoder = Callable[[bytes | None, RecordCoordinates | None], dict[str, Any]]


def event_type_header(
    headers: Mapping[str, str | bytes | None] | Iterable[tuple[str, str | bytes | None]] | None,
) -> str | None:
    """The ``ce_type`` header's value, or None when the record has none (a foreign record)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for key, value in pairs:
        if key == "ce_type":
            return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")
    return None


class EventReader:
    """Decodes record values into the models of ``catalog``; caches per model and per schema id.

    :meth:`model_for` resolves a foreign record's model from its writer schema's record name
    (full name, else unambiguous short name). Errors: :class:`~evstream.errors.DecodeError` (not
    Confluent-framed, unknown schema id, not a record), :class:`~evstream.errors.RegistryError`
    (the registry cannot be asked: retry later), :class:`~evstream.errors.UnknownEventTypeError`
    (no model for the record name; the message names it). Constructing it does no I/O.
    """

    def __init__(self, codec: AvroCodec, catalog: Catalog) -> None:
        self.codec = codec
        self.catalog = catalog
        self._decoders: dict[type[Event], Decoder] = {}
        self._models: dict[int, type[Event]] = {}  # writer schema id -> model

    def model_for(self, payload: bytes | None, where: RecordCoordinates | None = None) -> type[Event]:
        """The catalog model of the record schema ``payload`` was written with."""
        schema_id = self.codec.schema_id_of(payload, where)
        model = self._models.get(schema_id)
        if model is None:
            name = self.codec.record_name(schema_id, str(where or RecordCoordinates()))
            model = self._models[schema_id] = self.catalog.for_record(name)
        return model

    def decode(
        self, model: type[Event], payload: bytes | None, where: RecordCoordinates | None = None
    ) -> Event:
        """``payload`` as a ``model`` instance (writer schema resolved against the model's).

        Raises :class:`~evstream.errors.DecodeError` or pydantic's ``ValidationError``.
        """
        decode = self._decoders.get(model)
        if decode is None:
            decode = self._decoders[model] = self.codec.decoder(model.avro_schema_dict())
        return model.model_validate(decode(payload, where))
