"""The strict rules of event fields: what :class:`~evstream.schemas.events.Record` and
:class:`~evstream.schemas.events.Event` accept beyond pydantic's strict mode.

Models run in pydantic's strict mode (no bool/str/float -> int, no str -> bool, no int -> str...).
When a model is complete, :func:`strict_metadata` adds each field's rule to its metadata, once:

- ``long`` (an ``int`` field) / ``int`` (``types.Int32``): within [-2**63, 2**63-1] / 32 bits,
  as native ``ge``/``le`` bounds (narrowing the field's own); ``double`` (``float``): finite
  (no NaN or +-Infinity: JSON cannot carry them, JSON's ``1e400`` reads as infinity);
  ``float`` (``types.Float32``): finite and within 32-bit range;
- ``enum``: a member or its value string (what JSON and a decoded Avro record carry);
- ``timestamp-millis`` / ``-micros`` (``datetime``): a timezone-aware ``datetime`` or an
  RFC 3339 string with a zone (``2026-11-27T10:00:00Z``, ``...+01:00``), never a number nor a
  numeric string; its UTC instant within [0001-01-01T00:00:00Z, 9999-12-31T23:59:59.999999Z], the
  range a reader can decode (Avro timestamps decode to UTC datetimes);
- ``date``: a ``date`` (not a ``datetime``) or ``YYYY-MM-DD``; ``time-millis`` / ``-micros``:
  a ``time`` without a zone or ``HH:MM:SS[.fff]``; ``uuid``: a ``UUID`` or its 8-4-4-4-12 hex form;
  ``bytes``: bytes, or a string (its UTF-8, as pydantic reads JSON);
- arrays, maps and nullable unions apply their item's rule; unions of several types keep the
  checks that do not convert (timestamp range, integer range, finite floats).

Bounds and enums cost pydantic nothing per validation; the other rules are one
``BeforeValidator`` call per value. Strings that UTF-8 cannot encode are refused by
:func:`~evstream.schemas.catalog.validate_event` (:func:`lone_surrogate`); JSON bytes cannot
hold them. A rule raises ``PydanticCustomError`` whose type names it (``timestamp_range``,
``datetime_format``...), so a validation error names the field and the rule.
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta, timezone
from enum import Enum
from typing import Annotated, Any, NamedTuple, Union, cast, get_args, get_origin
from uuid import UUID

import annotated_types as at
from pydantic import AllowInfNan, BaseModel, BeforeValidator, Strict
from pydantic_core import PydanticCustomError

__all__ = [
    "APPLIED",
    "FLOAT32_MAX",
    "INT_RANGE",
    "LONG_RANGE",
    "MAX_INSTANT",
    "MIN_INSTANT",
    "Rule",
    "lone_surrogate",
    "nested_models",
    "strict_metadata",
]

Rule = Callable[[Any], Any]

LONG_RANGE = (-(2**63), 2**63 - 1)
INT_RANGE = (-(2**31), 2**31 - 1)
FLOAT32_MAX = 3.4028234663852886e38
MIN_INSTANT = datetime(1, 1, 1, tzinfo=UTC)
MAX_INSTANT = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)

_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_TIME = re.compile(r"(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_EXAMPLE = "e.g. 2026-11-27T10:00:00Z or 2026-11-27T11:00:00+01:00"


def _error(error_type: str, message: str, /, **context: Any) -> PydanticCustomError:
    return PydanticCustomError(error_type, message, context or None)


# ---------------------------------------------------------------------------------- leaf rules


def _beyond(value: float, low: float, high: float) -> PydanticCustomError | None:
    """The error pydantic's native ``ge``/``le`` would raise (the same types and messages)."""
    if value < low:
        return _error("greater_than_equal", "Input should be greater than or equal to {ge}", ge=low)
    if value > high:
        return _error("less_than_equal", "Input should be less than or equal to {le}", le=high)
    return None


def _integer(kind: str) -> Rule:
    low, high = INT_RANGE if kind == "int" else LONG_RANGE

    def rule(value: Any) -> Any:
        # bool, str, float: pydantic's strict int check refuses them next (int_type)
        if type(value) is int and (error := _beyond(value, low, high)) is not None:
            raise error
        return value

    return rule


def _floating(kind: str) -> Rule:
    limit = FLOAT32_MAX if kind == "float" else math.inf

    def rule(value: Any) -> Any:
        if type(value) is float and not math.isfinite(value):
            raise _error("finite_number", "Input should be a finite number")
        if type(value) in (int, float) and (error := _beyond(value, -limit, limit)) is not None:
            raise error
        return value

    return rule


def _in_range(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        # A ValueError (pydantic's value_error), worded as before the strict rules: callers match it.
        raise ValueError(f"datetimes must carry a timezone ({_EXAMPLE})")
    if not 1 < value.year < 9999:  # only near datetime's own limits can the UTC instant leave them
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise _error(
                "timestamp_range",
                "Input should lie within 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z in UTC"
                " (the range an Avro timestamp decodes to)",
            ) from None
    return value


def _fraction(digits: str | None) -> int:
    return int((digits or "0")[:6].ljust(6, "0"))


def _parse_datetime(text: str) -> datetime:
    found = _DATETIME.fullmatch(text)
    if found is None:
        raise _error(
            "datetime_format",
            "Input should be an ISO-8601 (RFC 3339) date-time string with a zone, {example}",
            example=_EXAMPLE,
        )
    year, month, day, hour, minute, second, frac, zulu, sign, off_h, off_m = found.groups()
    try:
        zone: timezone = UTC
        if not zulu:
            if int(off_m) > 59:
                raise ValueError("offset minutes must be in 0..59")
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            zone = timezone(-offset if sign == "-" else offset)
        return datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), _fraction(frac), zone
        )
    except ValueError as exc:
        raise _error(
            "datetime_format", "Input should be a valid date-time: {reason}", reason=str(exc)
        ) from None


def _timestamp(value: Any) -> Any:
    if isinstance(value, datetime):
        return _in_range(value)
    if type(value) is str:
        return _in_range(_parse_datetime(value))
    raise _error(
        "datetime_type",
        "Input should be an ISO-8601 date-time string with a zone ({example}); numbers are not read as times",
        example=_EXAMPLE,
    )


def _date(value: Any) -> Any:
    if type(value) is date:
        return value
    if type(value) is str:
        found = _DATE.fullmatch(value)
        if found is not None:
            try:
                return date(*map(int, found.groups()))
            except ValueError as exc:
                raise _error(
                    "date_format", "Input should be a valid date: {reason}", reason=str(exc)
                ) from None
    if isinstance(value, datetime):
        raise _error("date_type", "Input should be a date, not a date-time")
    raise _error(
        "date_type", "Input should be an ISO-8601 date string (YYYY-MM-DD); numbers are not read as dates"
    )


def _time(value: Any) -> Any:
    if isinstance(value, time):
        if value.tzinfo is not None:
            raise _error("time_zone", "Input should be a time of day without a zone (Avro time has none)")
        return value
    if type(value) is str:
        found = _TIME.fullmatch(value)
        if found is not None:
            hour, minute, second, frac = found.groups()
            try:
                return time(int(hour), int(minute), int(second), _fraction(frac))
            except ValueError as exc:
                raise _error(
                    "time_format", "Input should be a valid time: {reason}", reason=str(exc)
                ) from None
    raise _error("time_type", "Input should be a time of day string (HH:MM:SS[.fff]) without a zone")


def _uuid(value: Any) -> Any:
    if isinstance(value, UUID):
        return value
    if type(value) is str and _UUID.fullmatch(value):
        return UUID(value)
    raise _error("uuid_type", "Input should be a UUID in its 8-4-4-4-12 hex form")


def _utf8(value: Any) -> Any:
    if type(value) is str and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _error("utf8", "Input should be encodable as UTF-8 (no lone surrogates)") from None
    return value


def _bytes(value: Any) -> Any:
    if type(value) is str:  # JSON carries bytes as a string: its UTF-8 encoding, as pydantic reads JSON
        return _utf8(value).encode("utf-8")
    return value


def _enum(cls: type[Enum]) -> Rule:
    members = {member.value: member for member in cls}
    expected = ", ".join(repr(v) for v in members)

    def rule(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        if type(value) is str:
            member = members.get(value)
            if member is not None:
                return member
        raise _error("enum", "Input should be one of {expected}", expected=expected)

    return rule


# ------------------------------------------------------------------------------- composite rules


def _relabel(exc: PydanticCustomError | ValueError, where: str) -> PydanticCustomError:
    if isinstance(exc, PydanticCustomError):
        return _error(exc.type, "{where}: {detail}", where=where, detail=exc.message())
    return _error("value_error", "{where}: {detail}", where=where, detail=str(exc))


def _optional(inner: Rule) -> Rule:
    def rule(value: Any) -> Any:
        return value if value is None else inner(value)

    return rule


def _each(inner: Rule) -> Rule:
    def rule(value: Any) -> Any:
        if type(value) is not list:
            return value
        out = []
        for n, item in enumerate(value):
            try:
                out.append(inner(item))
            except (PydanticCustomError, ValueError) as exc:
                raise _relabel(exc, f"item {n}") from None
        return out

    return rule


def _each_value(inner: Rule) -> Rule:
    def rule(value: Any) -> Any:
        if type(value) is not dict:
            return value
        out = {}
        for key, item in value.items():
            try:
                out[key] = inner(item)
            except (PydanticCustomError, ValueError) as exc:
                raise _relabel(exc, f"key {key!r}") from None
        return out

    return rule


def _by_type(checks: Mapping[type, Rule]) -> Rule | None:
    """A union of several types: the non-converting check of the value's own type."""
    if not checks:
        return None

    def rule(value: Any) -> Any:
        check = checks.get(type(value))
        if check is None and isinstance(value, datetime):
            check = checks.get(datetime)
        return value if check is None else check(value)

    return rule


# ----------------------------------------------------------------------------------- building


class _Width(NamedTuple):
    integer: str  # "long" or "int"
    floating: str  # "double" or "float"
    local: bool  # a local-timestamp (naive by design): no zone rule


_DEFAULT = _Width("long", "double", False)


def _width(metadata: Iterable[Any], base: _Width = _DEFAULT) -> _Width:
    """The Avro widths dataclasses-avroschema gives a field: ``types.Int32`` (int),
    ``types.Float32`` (float), ``types.LocalDateTime*`` (local-timestamp); else long, double."""
    integer, floating, local = base
    for item in metadata:
        name = type(item).__name__
        if name == "Int32FieldInfo":
            integer = "int"
        elif name == "Float32FieldInfo":
            floating = "float"
        elif name.startswith("LocalDateTime"):
            local = True
    return _Width(integer, floating, local)


def _rule(annotation: Any, width: _Width = _DEFAULT) -> Rule | None:
    """The Python rule of a value of type ``annotation`` (None: pydantic's strict check suffices)."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    rule: Rule | None = None
    if origin is Annotated:
        rule = _rule(args[0], _width(args[1:], width))
    elif origin is Union or origin is types.UnionType:
        present = [a for a in args if a is not type(None)]
        if len(present) == 1:
            inner = _rule(present[0], width)
            rule = None if inner is None else _optional(inner)
        else:
            rule = _union(present, width)
    elif origin is list and args:
        item = _rule(args[0], width)
        rule = None if item is None else _each(item)
    elif origin is dict and len(args) == 2:
        value = _rule(args[1], width)
        rule = None if value is None else _each_value(value)
    elif isinstance(annotation, type):
        rule = _leaf(annotation, width)
    return rule


def _leaf(annotation: type, width: _Width) -> Rule | None:
    if issubclass(annotation, Enum):
        return _enum(annotation)
    if issubclass(annotation, BaseModel | bool | str):
        return None  # a nested record validates itself; bool, str: strict mode is the rule
    if issubclass(annotation, datetime):
        return None if width.local else _timestamp
    if issubclass(annotation, int):
        return _integer(width.integer)
    if issubclass(annotation, float):
        return _floating(width.floating)
    return next((rule for kind, rule in _LEAVES if issubclass(annotation, kind)), None)


_LEAVES: tuple[tuple[type, Rule], ...] = ((date, _date), (time, _time), (UUID, _uuid), (bytes, _bytes))


def _union(args: list[Any], width: _Width) -> Rule | None:
    checks: dict[type, Rule] = {}
    for arg in args:
        if arg is datetime and not width.local:
            checks[datetime] = _in_range
        elif arg is int:
            checks[int] = _integer(width.integer)
        elif arg is float:
            checks[float] = _floating(width.floating)
    return _by_type(checks)


class _Applied:
    """Marks a field's metadata as already made strict (an inherited field keeps it)."""

    def __repr__(self) -> str:
        return "StrictRules()"


APPLIED = _Applied()


def _narrow(item: Any, low: float, high: float) -> tuple[Any, str]:
    """``item`` narrowed to ``[low, high]`` if it is a bound, and which side it bounds."""
    if isinstance(item, at.Ge):
        return at.Ge(max(cast(Any, item.ge), low)), "low"
    if isinstance(item, at.Gt):
        return at.Gt(max(cast(Any, item.gt), low - 1)), "low"
    if isinstance(item, at.Le):
        return at.Le(min(cast(Any, item.le), high)), "high"
    if isinstance(item, at.Lt):
        return at.Lt(min(cast(Any, item.lt), high + 1)), "high"
    return item, ""


def _bounded(metadata: list[Any], low: float, high: float) -> list[Any]:
    """``metadata`` with its bounds narrowed to ``[low, high]`` (pydantic checks them natively)."""
    out: list[Any] = []
    sides: set[str] = set()
    for item in metadata:
        if isinstance(item, at.Interval):
            bounds = (("gt", at.Gt), ("ge", at.Ge), ("lt", at.Lt), ("le", at.Le))
            parts: list[Any] = [make(getattr(item, k)) for k, make in bounds if getattr(item, k) is not None]
        else:
            parts = [item]
        for part in parts:
            narrowed, side = _narrow(part, low, high)
            out.append(narrowed)
            sides.add(side)
    return [*([] if "low" in sides else [at.Ge(low)]), *([] if "high" in sides else [at.Le(high)]), *out]


def strict_metadata(annotation: Any, metadata: list[Any]) -> list[Any] | None:
    """A field's metadata with its strict rules added, or None when it has them already.

    Plain (or nullable) ints and floats get native bounds (``ge``/``le``, no NaN/Infinity) and
    plain enums lax enum validation (their value strings), which cost pydantic nothing; other
    fields with a rule get it as a ``BeforeValidator`` (one Python call per value).
    """
    if any(item is APPLIED for item in metadata):
        return None
    width = _width(metadata)
    args = get_args(annotation)
    plain = annotation
    if (get_origin(annotation) is Union or get_origin(annotation) is types.UnionType) and len(args) == 2:
        plain = (
            next((a for a in args if a is not type(None)), annotation) if type(None) in args else annotation
        )
    if plain is int:
        low, high = INT_RANGE if width.integer == "int" else LONG_RANGE
        return [*_bounded(metadata, low, high), APPLIED]
    if plain is float:
        limit = FLOAT32_MAX if width.floating == "float" else None
        extra = [] if limit is None else _bounded(metadata, -limit, limit)
        return [*(extra or metadata), AllowInfNan(False), APPLIED]
    if isinstance(plain, type) and issubclass(plain, Enum):
        return [*metadata, Strict(False), APPLIED]
    rule = _rule(annotation, width)
    return [*metadata, *([] if rule is None else [BeforeValidator(rule)]), APPLIED]


def lone_surrogate(value: Any, loc: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """The location of the first string in ``value`` (parsed JSON) that UTF-8 cannot encode."""
    if type(value) is str:
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return loc
        return None
    if type(value) is dict:
        for key, item in value.items():
            found = lone_surrogate(key, loc) or lone_surrogate(item, (*loc, key))
            if found is not None:
                return found
    elif type(value) is list:
        for n, item in enumerate(value):
            found = lone_surrogate(item, (*loc, n))
            if found is not None:
                return found
    return None


def nested_models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic model classes an annotation refers to (through unions, lists, dicts...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in nested_models(arg)]
