"""Avro in the Confluent wire format: byte 0x00, a 4-byte big-endian schema id, the Avro body.

:class:`AvroCodec` encodes with fastavro against a schema it registers once per subject (ids are
cached per ``(subject, schema)``), and decodes by looking the writer schema up by id (cached)
and resolving it against an optional reader schema, so old events read into new models.
Errors are typed (:mod:`evstream.errors`) and name the record's topic, partition and offset.
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from fastavro.read import SchemaResolutionError

from evstream.errors import (
    CorruptPayloadError,
    EncodeError,
    SchemaMismatchError,
    UnknownMagicByteError,
    UnknownSchemaIdError,
)
from evstream.schemas._registry import is_not_found, registry_errors

__all__ = ["AvroCodec", "RecordCoordinates", "RegistrySchemaStore", "SchemaStore"]

MAGIC = 0
_HEADER = struct.Struct(">bI")


class SchemaStore(Protocol):
    """The registry seam: register a schema under a subject, fetch a schema by id."""

    def register(self, subject: str, schema: str) -> int: ...

    def schema(self, schema_id: int) -> str | None:
        """The schema's JSON text, or None when the registry has no such id."""
        ...


class RegistrySchemaStore:
    """:class:`SchemaStore` over confluent-kafka's ``SchemaRegistryClient`` (real or ``mock://``)."""

    def __init__(self, client: SchemaRegistryClient) -> None:
        self._client = client

    def register(self, subject: str, schema: str) -> int:
        with registry_errors(f"registering {subject}"):
            return int(self._client.register_schema(subject, Schema(schema, "AVRO")))

    def schema(self, schema_id: int) -> str | None:
        with registry_errors(f"fetching schema id {schema_id}"):
            try:
                return str(self._client.get_schema(schema_id).schema_str)
            except SchemaRegistryError as exc:
                if is_not_found(exc):
                    return None
                raise


class RecordCoordinates(NamedTuple):
    """Where a payload came from, for error messages: ``orders[3]@1042``."""

    topic: str = ""
    partition: int | None = None
    offset: int | None = None

    def __str__(self) -> str:
        if not self.topic:
            return "payload"
        where = self.topic
        if self.partition is not None:
            where += f"[{self.partition}]"
        if self.offset is not None:
            where += f"@{self.offset}"
        return where


def _canonical(schema: str | dict[str, Any]) -> tuple[str, Any]:
    parsed = json.loads(schema) if isinstance(schema, str) else schema
    return json.dumps(parsed, sort_keys=True, separators=(",", ":")), parsed


_Check = Callable[[Any], str | None]
_INT32 = (-(2**31), 2**31 - 1)
_FLOAT32_MAX = 3.4028234663852886e38
_MIN_INSTANT = datetime(1, 1, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIMESTAMP_UNITS = {"timestamp-millis": 1000, "timestamp-micros": 1_000_000}
_SPAN_S = (
    int((_MIN_INSTANT - _EPOCH).total_seconds()),
    int((datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC) - _EPOCH).total_seconds()) + 1,
)


def _timestamp_check(units: int) -> _Check:
    low, high = _SPAN_S[0] * units, _SPAN_S[1] * units - 1

    def check(value: Any) -> str | None:
        if isinstance(value, datetime):
            if 1 < value.year < 9999:
                return None
            try:
                if value.tzinfo is not None:  # fastavro writes a naive datetime as UTC
                    value.astimezone(UTC)
            except OverflowError:
                return f"{value.isoformat()} lies outside years 1-9999 in UTC: no reader could decode it"
            return None
        if type(value) is int and not low <= value <= high:
            return f"timestamp {value} lies outside years 1-9999 in UTC: no reader could decode it"
        return None

    return check


def _int32_check(value: Any) -> str | None:
    if type(value) is int and not _INT32[0] <= value <= _INT32[1]:
        return f"{value} does not fit an Avro int (32 bits)"
    return None


def _float32_check(value: Any) -> str | None:
    if type(value) in (int, float) and math.isfinite(value) and abs(value) > _FLOAT32_MAX:
        return f"{value} does not fit an Avro float (32 bits): it would be read back as infinity"
    return None


def _readback_check(
    schema: Any, named: dict[str, Callable[[], _Check | None]], namespace: str = ""
) -> _Check | None:
    """A check of the values fastavro writes under ``schema`` but no reader can read back as
    written, or None when ``schema`` holds no such type (then encoding pays nothing)."""
    found: _Check | None = None
    if isinstance(schema, str):
        if schema in _PRIMITIVE_CHECKS:
            found = _PRIMITIVE_CHECKS[schema]
        else:
            ref = named.get(schema) or named.get(f"{namespace}.{schema}")
            found = ref() if ref is not None else None
    elif isinstance(schema, list):
        found = _union_check(schema, named, namespace)
    elif isinstance(schema, dict):
        kind, logical = schema.get("type"), schema.get("logicalType")
        if logical in _TIMESTAMP_UNITS and kind == "long":
            found = _timestamp_check(_TIMESTAMP_UNITS[logical])
        elif logical is not None and kind in ("int", "long", "float"):
            found = None  # date, time-*, local-timestamp-*: every value Python can hold reads back
        elif kind == "record":
            found = _record_check(schema, named, namespace)
        elif kind in ("array", "map"):
            inner = _readback_check(schema.get("items" if kind == "array" else "values"), named, namespace)
            found = None if inner is None else _each_check(inner)
        elif kind not in ("enum", "fixed"):
            found = _readback_check(kind, named, namespace)
    return found


def _union_check(
    schema: list[Any], named: dict[str, Callable[[], _Check | None]], namespace: str
) -> _Check | None:
    # fastavro picks an int/float branch by its range; a timestamp or record branch is checked
    checks = (_readback_check(b, named, namespace) for b in schema)
    branches = [c for c in checks if c is not None and c not in (_int32_check, _float32_check)]
    if not branches:
        return None

    def union(value: Any) -> str | None:
        return None if value is None else next((p for c in branches if (p := c(value))), None)

    return union


def _record_check(
    schema: dict[str, Any], named: dict[str, Callable[[], _Check | None]], namespace: str
) -> _Check | None:
    space = str(schema.get("namespace", namespace))
    name = str(schema["name"])
    full = name if "." in name else f"{space}.{name}".lstrip(".")
    named[full] = lambda: None  # a recursive reference is not checked below itself
    fields = [
        (str(f["name"]), c)
        for f in schema.get("fields", [])
        if (c := _readback_check(f["type"], named, space)) is not None
    ]

    def record(value: Any) -> str | None:
        if not isinstance(value, dict):
            return None
        for field, check in fields:
            problem = check(value.get(field))
            if problem is not None:
                return f"field {field!r}: {problem}"
        return None

    result = record if fields else None
    named[full] = lambda: result
    return result


def _each_check(inner: _Check) -> _Check:
    def each(value: Any) -> str | None:
        if isinstance(value, list):
            return next((f"item {n}: {p}" for n, v in enumerate(value) if (p := inner(v))), None)
        if isinstance(value, dict):
            return next((f"key {k!r}: {p}" for k, v in value.items() if (p := inner(v))), None)
        return None

    return each


_PRIMITIVE_CHECKS: dict[str, _Check] = {"int": _int32_check, "float": _float32_check}


class AvroCodec:
    """Encode and decode Confluent-framed Avro. Constructing it does no I/O."""

    def __init__(self, store: SchemaStore) -> None:
        self._store = store
        self._ids: dict[tuple[str, str], int] = {}
        self._parsed: dict[str, Any] = {}  # canonical schema text -> fastavro parsed schema
        self._writers: dict[int, Any] = {}  # schema id -> parsed writer schema
        self._writer_keys: dict[int, str] = {}  # schema id -> its canonical text

    def _parse(self, schema: str | dict[str, Any]) -> tuple[str, Any]:
        key, raw = _canonical(schema)
        parsed = self._parsed.get(key)
        if parsed is None:
            parsed = self._parsed[key] = fastavro.parse_schema(raw)
        return key, parsed

    def schema_id(self, subject: str, schema: str | dict[str, Any]) -> int:
        """The registry id of ``schema`` under ``subject``, registering it the first time."""
        key, parsed = self._parse(schema)
        found = self._ids.get((subject, key))
        if found is None:
            found = self._ids[(subject, key)] = self._store.register(subject, key)
            self._writers.setdefault(found, parsed)
            self._writer_keys.setdefault(found, key)
        return found

    def encoder(
        self, subject: str, schema: str | dict[str, Any], *, strict: bool = True
    ) -> Callable[[dict[str, Any]], bytes]:
        """A callable that frames records under ``schema``: parsed and registered once, up front.

        This is the hot path. Records are validated strictly: a missing or extra field, or a
        value of the wrong type, raises :class:`EncodeError` and nothing is returned; so does a
        value that fastavro would write but no reader could read back (a timestamp whose UTC
        instant lies outside years 1-9999, an Avro ``int`` beyond 32 bits, a ``float`` beyond
        32-bit range), checked only on the fields of those types. Callers whose records come from
        a validated model generated from the same schema may pass ``strict=False`` (wrong types
        still fail; the field-set and read-back checks are skipped: the model's strict rules
        already hold them, see :class:`~evstream.schemas.events.Record`).
        """
        key, parsed = self._parse(schema)
        header = _HEADER.pack(MAGIC, self.schema_id(subject, schema))
        name = parsed.get("name", "?") if isinstance(parsed, dict) else "?"
        write = fastavro.schemaless_writer
        unreadable = _readback_check(json.loads(key), {}) if strict else None

        def encode(record: dict[str, Any]) -> bytes:
            if unreadable is not None:
                problem = unreadable(record)
                if problem is not None:
                    raise EncodeError(f"{subject}: record does not match schema {name}: {problem}")
            out = io.BytesIO()
            out.write(header)
            try:
                write(out, parsed, record, strict=strict)
            except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
                raise EncodeError(f"{subject}: record does not match schema {name}: {exc}") from exc
            return out.getvalue()

        return encode

    def encode(self, subject: str, schema: str | dict[str, Any], record: dict[str, Any]) -> bytes:
        """Frame one ``record``; in loops prefer :meth:`encoder` (this re-canonicalises ``schema``)."""
        return self.encoder(subject, schema)(record)

    def decode(
        self,
        payload: bytes | None,
        reader_schema: str | dict[str, Any] | None = None,
        *,
        where: RecordCoordinates | None = None,
    ) -> dict[str, Any]:
        """Read a framed payload, resolving its writer schema (by id) against ``reader_schema``.

        In loops prefer :meth:`decoder` (this re-canonicalises ``reader_schema`` on every call).
        """
        return self.decoder(reader_schema)(payload, where)

    def decoder(
        self, reader_schema: str | dict[str, Any] | None = None
    ) -> Callable[[bytes | None, RecordCoordinates | None], dict[str, Any]]:
        """A callable ``(payload, where) -> record`` with ``reader_schema`` parsed once.

        When a payload's writer schema is the reader schema itself, fastavro reads it without
        schema resolution (the common case: producer and consumer on the same model version).
        """
        reader_key, reader = self._parse(reader_schema) if reader_schema is not None else ("", None)
        readers: dict[int, Any] = {}  # writer id -> reader schema to pass (None: same as writer)

        def decode(payload: bytes | None, where: RecordCoordinates | None = None) -> dict[str, Any]:
            if not payload or len(payload) < _HEADER.size:
                raise CorruptPayloadError(
                    str(where or RecordCoordinates()),
                    f"{len(payload or b'')} bytes is too short for a Confluent header",
                )
            magic, schema_id = _HEADER.unpack_from(payload)
            if magic != MAGIC:
                raise UnknownMagicByteError(
                    str(where or RecordCoordinates()),
                    f"unknown magic byte 0x{magic & 0xFF:02x} (not Confluent-framed Avro)",
                )
            writer = self._writers.get(schema_id)
            if writer is None:
                writer = self._writer(schema_id, str(where or RecordCoordinates()))
            if schema_id not in readers:
                readers[schema_id] = None if self._writer_keys.get(schema_id) == reader_key else reader
            body = io.BytesIO(payload)
            body.seek(_HEADER.size)
            try:
                record = fastavro.schemaless_reader(body, writer, readers[schema_id])
            except SchemaResolutionError as exc:  # the bytes are fine: the schemas do not resolve
                raise SchemaMismatchError(
                    str(where or RecordCoordinates()),
                    f"writer schema id {schema_id} does not resolve into the reader's schema: {exc}",
                ) from exc
            except Exception as exc:  # fastavro raises EOFError, IndexError, UnicodeDecodeError, ...
                raise CorruptPayloadError(
                    str(where or RecordCoordinates()),
                    f"Avro body does not decode with schema id {schema_id}: {exc.__class__.__name__}: {exc}",
                ) from exc
            if body.tell() != len(payload):
                raise CorruptPayloadError(
                    str(where or RecordCoordinates()),
                    f"{len(payload) - body.tell()} trailing byte(s) after the Avro body"
                    f" (schema id {schema_id})",
                )
            if not isinstance(record, dict):
                raise CorruptPayloadError(
                    str(where or RecordCoordinates()), f"schema id {schema_id} is not a record schema"
                )
            return record

        return decode

    def writer_name(self, payload: bytes | None) -> str:
        """The full record name of the schema ``payload`` was written with (looked up by its id)."""
        return self.record_name(self.schema_id_of(payload), "payload")

    @staticmethod
    def schema_id_of(payload: bytes | None, where: RecordCoordinates | None = None) -> int:
        """The registry id in ``payload``'s Confluent header; :class:`DecodeError` if it has none."""
        if not payload or len(payload) < _HEADER.size:
            raise CorruptPayloadError(
                str(where or RecordCoordinates()),
                f"{len(payload or b'')} bytes is too short for a Confluent header",
            )
        magic, schema_id = _HEADER.unpack_from(payload)
        if magic != MAGIC:
            raise UnknownMagicByteError(
                str(where or RecordCoordinates()),
                f"unknown magic byte 0x{magic & 0xFF:02x} (not Confluent-framed Avro)",
            )
        return int(schema_id)

    def record_name(self, schema_id: int, at: str = "payload") -> str:
        """The full name (``namespace.Name``) of the record schema with registry id ``schema_id``.

        The writer schema is fetched once per id (:class:`UnknownSchemaIdError` when the
        registry has no such id, :class:`RegistryError` when it cannot be asked);
        :class:`CorruptPayloadError` when the schema is not a record.
        """
        writer = self._writers.get(schema_id) or self._writer(schema_id, at)
        name = writer.get("name", "") if isinstance(writer, dict) and writer.get("type") == "record" else ""
        if not name:
            raise CorruptPayloadError(at, f"schema id {schema_id} is not a record schema")
        return str(name)

    def decode_any(self, payload: bytes | None, where: RecordCoordinates | None = None) -> Any:
        """Read a framed payload of any schema type (a record, a string, a long...) with its
        writer schema: Confluent-serialized keys, for example."""
        at = str(where or RecordCoordinates())
        schema_id = self.schema_id_of(payload, where)
        assert payload is not None
        writer = self._writers.get(schema_id) or self._writer(schema_id, at)
        body = io.BytesIO(payload)
        body.seek(_HEADER.size)
        try:
            value = fastavro.schemaless_reader(body, writer, None)
        except Exception as exc:  # as in decoder(): fastavro's errors are many
            raise CorruptPayloadError(
                at, f"Avro body does not decode with schema id {schema_id}: {exc.__class__.__name__}: {exc}"
            ) from exc
        if body.tell() != len(payload):
            raise CorruptPayloadError(
                at, f"{len(payload) - body.tell()} trailing byte(s) after the Avro body"
            )
        return value

    def _writer(self, schema_id: int, at: str) -> Any:
        writer = self._writers.get(schema_id)
        if writer is None:
            text = self._store.schema(schema_id)
            if text is None:
                raise UnknownSchemaIdError(at, f"schema id {schema_id} is not in the registry")
            key, writer = self._parse(text)
            self._writers[schema_id], self._writer_keys[schema_id] = writer, key
        return writer
