"""Strict events (issue 13, items 1 and 2): per Avro type, lax input is refused, the edges of each
type are accepted and read back, values beyond them are refused naming the field and the rule."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone
from enum import StrEnum
from typing import Any
from uuid import UUID

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from dataclasses_avroschema import types
from dataclasses_avroschema.pydantic import AvroBaseModel
from pydantic import ValidationError

from evstream.errors import ConfigError, EncodeError, EventValidationError
from evstream.schemas import AvroCodec, RegistrySchemaStore, validate_event
from evstream.schemas.domain import CATALOG, Currency, Money, OrderPlaced, PaymentCaptured
from evstream.schemas.events import Event, Record

LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
FLOAT32_MAX = 3.4028234663852886e38


class Color(StrEnum):
    RED = "red"
    BLUE = "blue"


class Part(Record):
    small: types.Int32

    class Meta:
        namespace = "evstream.tests.strict"


class Kitchen(Event, topic="strict", key="ident", avro_namespace="evstream.tests.strict"):
    """One field per Avro type (and the logical types the models generate)."""

    ident: str
    count: int  # long
    small: types.Int32  # int
    ratio: float  # double
    single: types.Float32  # float
    flag: bool
    blob: bytes
    color: Color  # enum
    tags: list[int]  # array
    scores: dict[str, int]  # map
    maybe: int | None  # nullable union
    part: Part  # record
    at: datetime  # timestamp-millis
    at_micros: types.DateTimeMicro  # timestamp-micros
    day: date  # date
    clock: time  # time-millis
    uid: UUID  # uuid
    times: list[datetime]
    when: datetime | None = None


GOOD: dict[str, Any] = {
    "ident": "k-1",
    "count": 1,
    "small": 1,
    "ratio": 0.5,
    "single": 0.5,
    "flag": True,
    "blob": "bytes",
    "color": "red",
    "tags": [1, 2],
    "scores": {"a": 1},
    "maybe": None,
    "part": {"small": 1},
    "at": "2026-11-27T10:00:00Z",
    "at_micros": "2026-11-27T10:00:00.123456+01:00",
    "day": "2026-11-27",
    "clock": "10:00:00.250",
    "uid": "0190c3b2-4d5e-7f00-8000-000000000001",
    "times": ["2026-11-27T10:00:00Z"],
    "when": None,
}

ORDER: dict[str, Any] = {
    "order_id": "o-1",
    "customer_id": "c-1",
    "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price": {"amount_minor": 1250, "currency": "EUR"}}],
    "total": {"amount_minor": 2500, "currency": "EUR"},
    "placed_at": "2026-11-27T10:00:00Z",
    "shipping_country": "DE",
}


@pytest.fixture
def codec() -> Iterator[AvroCodec]:
    with SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"}) as client:
        yield AvroCodec(RegistrySchemaStore(client))


def refusals(model: type[Event], data: dict[str, Any]) -> list[tuple[str, str]]:
    """``(field, error type)`` of the first error, for parsed JSON (dict) and for JSON bytes."""
    out = []
    try:
        validate_event(model, data)
    except EventValidationError as exc:
        out.append((exc.field, "dict"))
    else:
        out.append(("", "dict accepted"))
    try:
        model.model_validate_json(json.dumps(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        out.append((".".join(map(str, first["loc"])), first["type"]))
    else:
        out.append(("", "json accepted"))
    return out


def with_value(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(base))
    *parents, last = path.split(".")
    target = data
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[last] = value
    return data


def roundtrip(codec: AvroCodec, event: Event) -> Event:
    model = type(event)
    schema = model.avro_schema_dict()
    payload = codec.encoder(model.subject(), schema, strict=False)(event.model_dump())
    assert codec.encode(model.subject(), schema, event.model_dump()) == payload  # strict path agrees
    return model.model_validate(codec.decode(payload, schema))


# ------------------------------------------------------------------------- the items


@pytest.mark.parametrize(
    "placed_at",
    ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "9999-12-31T23:30:00-01:00"],
)
def test_item1_timestamps_that_no_reader_can_decode_are_refused(placed_at: str) -> None:
    data = {**ORDER, "placed_at": placed_at}
    assert refusals(OrderPlaced, data) == [("placed_at", "dict"), ("placed_at", "timestamp_range")]
    with pytest.raises(EventValidationError, match=r"placed_at.*9999-12-31T23:59:59\.999999Z in UTC"):
        CATALOG.validate("OrderPlaced", data)
    as_python = datetime.fromisoformat(placed_at)
    with pytest.raises(ValidationError, match="timestamp_range"):
        OrderPlaced(**{**OrderPlaced.model_validate(ORDER).model_dump(), "placed_at": as_python})


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("total.amount_minor", True),
        ("total.amount_minor", "1999"),
        ("total.amount_minor", 1.0),
        ("lines.0.quantity", False),
        ("lines.0.unit_price.amount_minor", "5"),
        ("placed_at", 0),
        ("placed_at", 253402300800),
        ("placed_at", 1.5),
        ("placed_at", "0"),
        ("placed_at", "253402300800"),
        ("placed_at", True),
        ("placed_at", "2026-11-27T10:00:00"),  # no zone
        ("placed_at", "2026-11-27"),
        ("shipping_country", 49),
        ("coupon_code", False),
    ],
)
def test_item2_no_coercion_of_money_times_or_strings(path: str, value: Any) -> None:
    (dict_field, _), (json_field, kind) = refusals(OrderPlaced, with_value(ORDER, path, value))
    assert dict_field == json_field == path
    assert kind != "json accepted"


def test_item2_python_callers_are_strict_too() -> None:
    with pytest.raises(ValidationError, match="amount_minor"):
        Money(amount_minor=True, currency=Currency.EUR)  # a bool is an int to mypy
    with pytest.raises(ValidationError, match="amount_minor"):
        Money(amount_minor="1999", currency=Currency.EUR)  # type: ignore[arg-type]  # the point
    event = OrderPlaced.model_validate(ORDER)
    with pytest.raises(ValidationError, match="numbers are not read as times"):
        OrderPlaced(**{**event.model_dump(), "placed_at": 0})


def test_errors_name_the_field_and_the_rule() -> None:
    with pytest.raises(EventValidationError) as caught:
        CATALOG.validate("OrderPlaced", with_value(ORDER, "total.amount_minor", True))
    assert caught.value.field == "total.amount_minor"
    assert "Input should be a valid integer" in str(caught.value)
    with pytest.raises(EventValidationError) as caught:
        CATALOG.validate("OrderPlaced", with_value(ORDER, "placed_at", 0))
    assert caught.value.field == "placed_at"
    assert "numbers are not read as times" in str(caught.value)
    with pytest.raises(EventValidationError) as caught:
        CATALOG.validate("OrderPlaced", with_value(ORDER, "total.amount_minor", 2**63))
    assert caught.value.field == "total.amount_minor"
    assert "less than or equal to 9223372036854775807" in str(caught.value)


# ------------------------------------------------------------------------- what still works


def test_json_values_of_enums_dates_and_nested_records_validate_in_both_modes(codec: AvroCodec) -> None:
    from_dict = validate_event(Kitchen, GOOD)
    from_json = Kitchen.model_validate_json(json.dumps(GOOD))
    assert from_dict == from_json
    assert from_dict.color is Color.RED
    assert from_dict.at == datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert from_dict.clock == time(10, 0, 0, 250_000)
    assert roundtrip(codec, from_dict) == from_dict.model_copy(update={"at_micros": from_dict.at_micros})
    # model_dump(mode="json") -> model_validate (what stream tables store) reads back the same
    assert Kitchen.model_validate(from_dict.model_dump(mode="json")) == from_dict
    assert Kitchen.model_validate_json(from_dict.model_dump_json()) == from_dict


def test_the_demo_events_still_encode_and_decode(codec: AvroCodec) -> None:
    event = CATALOG.validate("OrderPlaced", ORDER)
    assert roundtrip(codec, event) == event
    paid = PaymentCaptured(
        order_id="o-1",
        payment_id="p-1",
        amount=Money(amount_minor=1, currency="EUR"),  # type: ignore[arg-type]  # a value string
        method="CARD",  # type: ignore[arg-type]  # a value string, as a decoded record holds
        captured_at=datetime(2026, 11, 27, tzinfo=UTC),
    )
    assert roundtrip(codec, paid) == paid


# ------------------------------------------------------------------------- per Avro type

EDGES: list[tuple[str, Any, Any]] = [
    # (field, JSON value, the Python value read back)
    ("count", LONG_MAX, LONG_MAX),
    ("count", LONG_MIN, LONG_MIN),
    ("small", INT_MAX, INT_MAX),
    ("small", INT_MIN, INT_MIN),
    ("ratio", 1.7976931348623157e308, 1.7976931348623157e308),
    ("ratio", -5e-324, -5e-324),
    ("ratio", 3, 3.0),  # an integral JSON number is a number
    ("single", 3.0e38, None),  # read back rounded to 32 bits
    ("tags", [LONG_MIN, LONG_MAX], [LONG_MIN, LONG_MAX]),
    ("scores", {"max": LONG_MAX}, {"max": LONG_MAX}),
    ("maybe", LONG_MAX, LONG_MAX),
    ("part", {"small": INT_MIN}, Part(small=INT_MIN)),
    ("blob", "\u00ff", b"\xc3\xbf"),
    ("color", "blue", Color.BLUE),
    ("at", "0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
    ("at", "0001-01-01T23:59:00+23:59", datetime(1, 1, 1, tzinfo=UTC)),
    ("at", "9999-12-31T23:59:59.999Z", datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
    ("at", "9999-12-31T00:00:00-23:59", datetime(9999, 12, 31, 23, 59, tzinfo=UTC)),
    ("at", "2026-11-27t10:00:00.123456789z", datetime(2026, 11, 27, 10, 0, 0, 123000, tzinfo=UTC)),
    ("at", "1969-12-31T23:59:59.999+00:00", datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
    ("at_micros", "9999-12-31T23:59:59.999999Z", datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ("at_micros", "0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
    ("times", ["9999-12-31T23:59:59.999Z"], [datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)]),
    ("when", "0001-01-01T00:00:00-00:00", datetime(1, 1, 1, tzinfo=UTC)),
    ("day", "0001-01-01", date(1, 1, 1)),
    ("day", "9999-12-31", date(9999, 12, 31)),
    ("clock", "23:59:59.999", time(23, 59, 59, 999000)),
    ("clock", "00:00:00", time(0)),
    ("uid", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", UUID(int=2**128 - 1)),
]


@pytest.mark.parametrize(("field", "value", "read_back"), EDGES)
def test_edges_are_accepted_and_read_back(codec: AvroCodec, field: str, value: Any, read_back: Any) -> None:
    data = {**GOOD, field: value}
    event = validate_event(Kitchen, data)
    assert Kitchen.model_validate_json(json.dumps(data)) == event
    decoded = roundtrip(codec, event)
    got = getattr(decoded, field)
    if read_back is None:  # a 32-bit float: within float32 rounding
        assert math.isclose(got, value, rel_tol=1e-7)
    else:
        assert got == read_back


REFUSED: list[tuple[str, Any, str]] = [
    # (field, JSON value, error type in JSON mode)
    ("count", LONG_MAX + 1, "less_than_equal"),
    ("count", LONG_MIN - 1, "greater_than_equal"),
    ("count", True, "int_type"),
    ("count", "1", "int_type"),
    ("count", 1.0, "int_type"),
    ("small", INT_MAX + 1, "less_than_equal"),
    ("small", INT_MIN - 1, "greater_than_equal"),
    ("small", False, "int_type"),
    ("ratio", True, "float_type"),
    ("ratio", "0.5", "float_type"),
    ("ratio", 1e400, "finite_number"),  # JSON's overflow reads as infinity
    ("single", 3.5e38, "less_than_equal"),
    ("single", -3.5e38, "greater_than_equal"),
    ("flag", 1, "bool_type"),
    ("flag", "true", "bool_type"),
    ("ident", 1, "string_type"),
    ("blob", 1, "bytes_type"),
    ("color", "RED", "enum"),
    ("color", 0, "enum"),
    ("tags", [1, True], "int_type"),
    ("tags", [LONG_MAX + 1], "less_than_equal"),
    ("scores", {"a": "1"}, "int_type"),
    ("maybe", LONG_MIN - 1, "greater_than_equal"),
    ("maybe", "1", "int_type"),
    ("part", {"small": INT_MAX + 1}, "less_than_equal"),
    ("part", {"small": 1, "extra": 1}, "extra_forbidden"),
    ("at", 0, "datetime_type"),
    ("at", 1764237600000, "datetime_type"),
    ("at", "1764237600", "datetime_format"),
    ("at", "2026-11-27T10:00:00", "datetime_format"),
    ("at", "2026-11-27T10:00Z", "datetime_format"),
    ("at", "20261127T100000Z", "datetime_format"),
    ("at", "2026-02-30T10:00:00Z", "datetime_format"),
    ("at", "2026-11-27T10:00:00+24:00", "datetime_format"),
    ("at", "2026-11-27T10:00:00+01:60", "datetime_format"),
    ("at", "9999-12-31T23:59:59-00:01", "timestamp_range"),
    ("at", "0001-01-01T00:00:00+00:01", "timestamp_range"),
    ("at_micros", "9999-12-31T23:59:59-23:59", "timestamp_range"),
    ("times", ["2026-11-27T10:00:00Z", 0], "datetime_type"),
    ("times", ["9999-12-31T23:59:59-23:59"], "timestamp_range"),
    ("when", "0001-01-01T00:00:00+23:59", "timestamp_range"),
    ("when", 0, "datetime_type"),
    ("day", 0, "date_type"),
    ("day", "2026-11-27T00:00:00Z", "date_type"),
    ("day", "2026-13-01", "date_format"),
    ("clock", 0, "time_type"),
    ("clock", "10:00:00Z", "time_type"),
    ("uid", 1, "uuid_type"),
    ("uid", "0190c3b24d5e7f008000000000000001", "uuid_type"),
]


@pytest.mark.parametrize(("field", "value", "kind"), REFUSED)
def test_lax_and_out_of_range_values_are_refused_naming_the_field(field: str, value: Any, kind: str) -> None:
    (dict_field, _), (json_field, json_kind) = refusals(Kitchen, {**GOOD, field: value})
    assert dict_field.split(".")[0] == field
    assert json_field.split(".")[0] == field
    assert json_kind == kind


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused_from_python(value: float) -> None:
    event = validate_event(Kitchen, GOOD)
    for field in ("ratio", "single"):
        with pytest.raises(ValidationError, match="finite"):
            Kitchen(**{**event.model_dump(), field: value})


def test_aware_datetimes_from_python_and_naive_ones_refused() -> None:
    event = validate_event(Kitchen, GOOD)
    base = event.model_dump()
    assert Kitchen(**{**base, "at": datetime(9999, 12, 31, 23, 59, tzinfo=UTC)}).at.year == 9999
    with pytest.raises(ValidationError, match="datetimes must carry a timezone"):
        Kitchen(**{**base, "at": datetime(2026, 1, 1)})
    with pytest.raises(ValidationError, match="timestamp_range"):
        Kitchen(**{**base, "at": datetime(1, 1, 1, tzinfo=timezone(timedelta(minutes=1)))})
    with pytest.raises(ValidationError, match="a date, not a date-time"):
        Kitchen(**{**base, "day": datetime(2026, 1, 1, tzinfo=UTC)})


def test_lone_surrogates_from_parsed_json_are_refused() -> None:
    data = json.loads('{"coupon_code": "\\ud800"}')
    with pytest.raises(EventValidationError, match=r"field 'coupon_code': .*UTF-8"):
        CATALOG.validate("OrderPlaced", {**ORDER, **data})
    with pytest.raises(EventValidationError, match="field 'blob'"):
        validate_event(Kitchen, {**GOOD, "blob": data["coupon_code"]})


def test_field_constraints_stay_narrower_than_the_avro_range() -> None:
    with pytest.raises(EventValidationError, match="greater than or equal to 0"):
        CATALOG.validate("OrderPlaced", with_value(ORDER, "total.amount_minor", -1))
    with pytest.raises(EventValidationError, match="less than or equal to 10000"):
        CATALOG.validate("OrderPlaced", with_value(ORDER, "lines.0.quantity", 10_001))

    class Wide(Event, topic="strict", key="ident", avro_namespace="evstream.tests.strict"):
        ident: str
        n: int = 0

    class Loose(Wide):
        m: types.Int32 = 0

    assert Loose(ident="x", n=LONG_MAX, m=INT_MAX).m == INT_MAX
    with pytest.raises(ValidationError, match="less_than_equal"):
        Loose(ident="x", n=LONG_MAX + 1)
    with pytest.raises(ValidationError, match="less_than_equal"):
        Loose(ident="x", m=INT_MAX + 1)


def test_a_plain_nested_model_is_a_config_error() -> None:
    class Plain(AvroBaseModel):
        n: int

    with pytest.raises(ConfigError, match=r"Lax\.inner: Plain is a plain pydantic model.*Record"):

        class Lax(Event, topic="strict", key="ident", avro_namespace="evstream.tests.strict"):
            ident: str
            inner: Plain


# ------------------------------------------------------------------------- the codec's check

UNREADABLE = {
    "type": "record",
    "name": "Raw",
    "namespace": "evstream.tests.strict",
    "fields": [
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "small", "type": "int"},
        {"name": "single", "type": "float"},
        {
            "name": "many",
            "type": {"type": "array", "items": {"type": "long", "logicalType": "timestamp-micros"}},
        },
        {"name": "maybe", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
    ],
}
READABLE: dict[str, Any] = {
    "at": datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
    "small": INT_MAX,
    "single": 3.0e38,
    "many": [datetime(1, 1, 1, tzinfo=UTC)],
    "maybe": None,
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("at", datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(-timedelta(hours=23, minutes=59)))),
        ("at", 253402300800000),  # raw millis: year 10000
        ("small", INT_MAX + 1),
        ("single", 3.5e38),
        ("many", [datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))]),
        ("maybe", datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))),
    ],
)
def test_the_strict_encoder_refuses_what_no_reader_could_read_back(
    codec: AvroCodec, field: str, value: Any
) -> None:
    payload = codec.encode("raw-value", UNREADABLE, READABLE)
    assert codec.decode(payload, UNREADABLE)["at"] == READABLE["at"]
    with pytest.raises(EncodeError, match=f"field '{field}'"):
        codec.encode("raw-value", UNREADABLE, {**READABLE, field: value})
