"""Event models, the committed history, and the compatibility gate (offline)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import create_model

from evstream import EventValidationError, IncompatibleSchemaError, SchemaHistoryError, UnknownEventTypeError
from evstream.schemas import Catalog, Envelope, Event, SchemaHistory, bump, check, incompatibilities
from evstream.schemas.domain import CATALOG, OrderPlaced
from evstream.schemas.events import Compatibility
from tests.helpers import one_line_error, run_cli

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ORDER = {
    "order_id": "o-1",
    "customer_id": "c-1",
    "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price": {"amount_minor": 1250, "currency": "EUR"}}],
    "total": {"amount_minor": 2500, "currency": "EUR"},
    "placed_at": NOW.isoformat(),
    "shipping_country": "DE",
}


def test_committed_history_matches_the_models() -> None:
    """The repo's own gate: every demo model equals its latest committed version."""
    reports = check(CATALOG, SchemaHistory())
    assert [r.problems for r in reports] == [()] * len(CATALOG)
    assert all(r.latest >= 1 for r in reports)


def test_catalog_validates_and_names_the_failing_field() -> None:
    event = CATALOG.validate("OrderPlaced", ORDER)
    assert isinstance(event, OrderPlaced)
    assert event.aggregate_id() == "o-1"
    assert event.subject() == "orders-evstream.orders.OrderPlaced"
    with pytest.raises(EventValidationError, match=r"OrderPlaced: field 'total\.currency': Input should be"):
        CATALOG.validate("OrderPlaced", {**ORDER, "total": {"amount_minor": 1, "currency": "XXX"}})
    with pytest.raises(EventValidationError, match="field 'shipping_country'"):
        CATALOG.validate("OrderPlaced", {**ORDER, "shipping_country": "Germany"})
    with pytest.raises(EventValidationError, match="field 'gift': Extra inputs are not permitted"):
        CATALOG.validate("OrderPlaced", {**ORDER, "gift": True})
    with pytest.raises(
        UnknownEventTypeError, match="unknown event type 'OrderPlacd'; known: CustomerRegistered"
    ):
        CATALOG.model("OrderPlacd")


def test_envelope_roundtrips_through_headers() -> None:
    env = Envelope(
        event_type="OrderPlaced",
        source="checkout",
        correlation_id="req-1",
        causation_id="cmd-9",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    headers = env.to_headers()
    assert dict(headers)["ce_type"] == b"OrderPlaced"
    assert Envelope.from_headers(list(headers)) == env
    assert env.event_id.version == 7
    later = Envelope(event_type="x")
    assert later.event_id > env.event_id  # time-ordered


class ThingBase(Event):
    topic: ClassVar[str] = "things"
    aggregate_field: ClassVar[str] = "thing_id"

    thing_id: str

    class Meta:
        namespace = "evstream.tests"
        schema_doc = False


def model(fields: dict[str, Any], mode: Compatibility = "BACKWARD") -> type[Event]:
    """A throwaway event type ``evstream.tests.Thing`` with the given extra fields."""
    cls: type[Event] = create_model("Thing", __base__=ThingBase, **fields)
    cls.compatibility = mode
    return cls


V1 = {"name": (str, ...), "size": (int, ...)}


@pytest.mark.parametrize(
    ("change", "mode", "breaks"),
    [
        ({**V1, "colour": (str, "red")}, "BACKWARD", None),
        ({**V1, "colour": (str, ...)}, "BACKWARD", "colour"),
        ({**V1, "colour": (str, ...)}, "FORWARD", None),
        ({"name": (str, ...)}, "BACKWARD", None),
        ({"name": (str, ...)}, "FORWARD", "size"),
        ({**V1, "colour": (str, "red")}, "FULL", None),
        ({**V1, "colour": (str, ...)}, "FULL", "colour"),
        ({"name": (str, ...), "size": (str, ...)}, "BACKWARD", "/fields/2/type"),
        ({"name": (str, ...), "size": (str, ...)}, "NONE", None),
    ],
)
def test_modes(change: dict[str, Any], mode: Compatibility, breaks: str | None) -> None:
    old = model(V1).avro_schema_dict()
    new = model(change).avro_schema_dict()
    found = incompatibilities(new, [(1, old)], mode)
    if breaks is None:
        assert found == []
    else:
        assert found, f"{mode} should reject {change}"
        assert breaks in str(found[0])


def test_transitive_modes_check_every_version() -> None:
    v1 = model({"name": (str, ...)}).avro_schema_dict()
    v2 = model({"name": (str, ...), "size": (int, 0)}).avro_schema_dict()
    v3 = model({"size": (int, 0)}).avro_schema_dict()  # drops "name": old readers of v1 need it
    history = [(1, v1), (2, v2)]
    assert incompatibilities(v3, history, "FORWARD") != []
    v3b = model({"name": (str, ...), "size": (int, 0), "tag": (str, ...)}).avro_schema_dict()
    assert incompatibilities(v3b, history, "BACKWARD") != []
    # v3c reads v2 (size has a default) but its new required field fails against v1 transitively only
    v2b = model({"name": (str, ...), "size": (int, ...)}).avro_schema_dict()
    v3c = model({"name": (str, ...), "size": (int, ...)}).avro_schema_dict()
    assert incompatibilities(v3c, [(1, v1), (2, v2b)], "BACKWARD") == []
    assert [i.version for i in incompatibilities(v3c, [(1, v1), (2, v2b)], "BACKWARD_TRANSITIVE")] == [1]


def history_with(tmp_path: Path, *schemas: dict[str, Any]) -> SchemaHistory:
    history = SchemaHistory(tmp_path / "avro")
    for number, schema in enumerate(schemas, start=1):
        history.write("things-evstream.tests.Thing", number, schema)
    return history


def test_check_and_bump(tmp_path: Path) -> None:
    v1 = model(V1)
    history = history_with(tmp_path, v1.avro_schema_dict())
    assert [r.ok for r in check(Catalog([v1]), history)] == [True]

    grown = model({**V1, "colour": (str, "red")})
    [report] = check(Catalog([grown]), history)
    assert report.changed
    assert report.problems == (
        "things-evstream.tests.Thing: the model differs from committed v1; run `evstream schemas bump`",
    )
    assert bump(Catalog([grown]), history) == [tmp_path / "avro" / "things-evstream.tests.Thing" / "v2.avsc"]
    assert [r.ok for r in check(Catalog([grown]), history)] == [True]

    broken = model({**V1, "colour": (str, "red"), "weight": (int, ...)})
    with pytest.raises(
        IncompatibleSchemaError, match=r"would be v3\): incompatible under BACKWARD: .*weight"
    ):
        bump(Catalog([broken]), history)
    assert sorted(p.name for p in (tmp_path / "avro" / "things-evstream.tests.Thing").iterdir()) == [
        "v1.avsc",
        "v2.avsc",
    ]


def test_history_gaps_and_bad_json(tmp_path: Path) -> None:
    history = history_with(tmp_path, model(V1).avro_schema_dict())
    (tmp_path / "avro" / "things-evstream.tests.Thing" / "v3.avsc").write_text("{}")
    with pytest.raises(SchemaHistoryError, match=r"versions \[1, 3\] are not 1..2"):
        check(Catalog([model(V1)]), history)
    (tmp_path / "avro" / "things-evstream.tests.Thing" / "v2.avsc").write_text("{nope")
    with pytest.raises(SchemaHistoryError, match="not valid JSON"):
        check(Catalog([model(V1)]), history)


def test_cli_check_names_subject_version_and_field(tmp_path: Path, repo_root: Path) -> None:
    shutil.copytree(repo_root / "schemas" / "avro", tmp_path / "avro")
    subject = "orders-evstream.orders.OrderPlaced"
    v1 = json.loads((tmp_path / "avro" / subject / "v1.avsc").read_text())
    # A committed v2 that adds a field without a default breaks BACKWARD against v1.
    v2 = {**v1, "fields": [*v1["fields"], {"name": "gift_wrap", "type": "boolean"}]}
    (tmp_path / "avro" / subject / "v2.avsc").write_text(json.dumps(v2))
    proc = run_cli("schemas", "check", "--history", str(tmp_path / "avro"))
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert line.startswith(f"error: {subject} v2: incompatible under BACKWARD: new reads v1:")
    assert "gift_wrap" in line

    ok = run_cli("schemas", "check", "--history", str(repo_root / "schemas" / "avro"), "-o", "json")
    assert ok.returncode == 0, ok.stderr
    assert {r["subject"] for r in json.loads(ok.stdout)} == {m.subject() for m in CATALOG}
