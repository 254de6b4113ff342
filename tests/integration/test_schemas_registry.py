"""`schemas register` against the real registry: history in order, mode set, the registry's own gate."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import ClassVar

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from evstream import IncompatibleSchemaError
from evstream.schemas import Catalog, Event, SchemaHistory, register_catalog
from evstream.schemas.domain import CATALOG
from tests.conftest import Endpoints
from tests.helpers import one_line_error, run_cli


def test_register_the_demo_catalog_is_idempotent(
    endpoints: Endpoints, registry: SchemaRegistryClient
) -> None:
    first = register_catalog(CATALOG, SchemaHistory(), registry)
    again = register_catalog(CATALOG, SchemaHistory(), registry)
    assert [r.versions for r in first] == [r.versions for r in again]
    for result in first:
        assert registry.get_compatibility(result.subject) == "BACKWARD"
        latest = registry.get_latest_version(result.subject)
        assert latest.schema_id == result.versions[-1]
    proc = run_cli("schemas", "register", "--registry-url", endpoints.registry_url, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    assert {r["subject"]: r["ids"] for r in json.loads(proc.stdout)} == {
        r.subject: list(r.versions) for r in first
    }


def thing(namespace: str) -> type[Event]:
    class Thing(Event):
        topic: ClassVar[str] = "things"
        aggregate_field: ClassVar[str] = "thing_id"
        thing_id: str

        class Meta:
            pass

    Thing.Meta.namespace = namespace  # type: ignore[attr-defined]
    Thing.Meta.schema_doc = False  # type: ignore[attr-defined]
    return Thing


def test_the_registry_refuses_an_incompatible_version(registry: SchemaRegistryClient, tmp_path: Path) -> None:
    model = thing(f"evstream.t{uuid.uuid4().hex[:8]}")
    subject = model.subject()
    history = SchemaHistory(tmp_path)
    v1 = model.avro_schema_dict()
    history.write(subject, 1, v1)
    # A hand-written v2 that the offline gate would also reject: a new field without a default.
    history.write(subject, 2, {**v1, "fields": [*v1["fields"], {"name": "weight", "type": "int"}]})
    with pytest.raises(IncompatibleSchemaError, match=rf"{subject} v2: the registry says it is incompatible"):
        register_catalog(Catalog([model]), history, registry)
    assert [v for v in registry.get_versions(subject)] == [1]  # v2 never reached the registry


def test_cli_register_unreachable_registry(tmp_path: Path) -> None:
    proc = run_cli("schemas", "register", "--registry-url", "http://127.0.0.1:1/apis/ccompat/v7", timeout=120)
    assert proc.returncode == 1
    assert one_line_error(proc).startswith("error: ")
