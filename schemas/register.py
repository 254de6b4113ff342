"""Push the committed history to a registry: versions in order, mode set, the registry's own check first."""

from __future__ import annotations

import json
from dataclasses import dataclass

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from evstream.errors import IncompatibleSchemaError, SchemaHistoryError
from evstream.schemas._registry import is_not_found, registry_errors
from evstream.schemas.catalog import Catalog
from evstream.schemas.history import SchemaHistory

__all__ = ["Registered", "register_catalog"]


@dataclass(frozen=True)
class Registered:
    """What the registry holds for one subject after ``register``."""

    subject: str
    mode: str
    versions: tuple[int, ...]  # the registry's schema id for each committed version, in order


def _exists(client: SchemaRegistryClient, subject: str) -> bool:
    try:
        client.get_latest_version(subject)
    except SchemaRegistryError as exc:
        if is_not_found(exc):
            return False
        raise
    return True


def _registered_id(client: SchemaRegistryClient, subject: str, schema: Schema) -> int | None:
    try:
        found = client.lookup_schema(subject, schema).schema_id
        return int(found) if found is not None else None
    except SchemaRegistryError as exc:
        if is_not_found(exc):
            return None
        raise


def register_catalog(
    catalog: Catalog, history: SchemaHistory, client: SchemaRegistryClient
) -> list[Registered]:
    """Register every committed version of every subject, oldest first (idempotent).

    Before each registration the registry's compatibility endpoint is asked; a "no" raises
    :class:`IncompatibleSchemaError` naming the subject and version, and nothing more is sent
    for that subject. The subject's compatibility level is set to the model's mode. Subjects
    follow the catalog's subject strategy (or the model's own).
    """
    results = []
    for model in catalog:
        subject = catalog.subject(model)
        versions = history.versions(subject)
        if not versions:
            raise SchemaHistoryError(f"{subject}: no committed version; run `evstream schemas bump` first")
        ids = []
        with registry_errors(subject):
            if _exists(client, subject):
                client.set_compatibility(subject, model.compatibility)
            for number, schema in versions:
                candidate = Schema(json.dumps(schema), "AVRO")
                known = _registered_id(client, subject, candidate)
                if known is not None:  # already there (a re-run): never re-test old versions
                    ids.append(known)
                    continue
                if _exists(client, subject) and not client.test_compatibility(subject, candidate):
                    raise IncompatibleSchemaError(
                        f"{subject} v{number}: the registry says it is incompatible with what it holds "
                        f"(mode {client.get_compatibility(subject)})"
                    )
                ids.append(int(client.register_schema(subject, candidate)))
                if number == 1:
                    client.set_compatibility(subject, model.compatibility)
        results.append(Registered(subject, model.compatibility, tuple(ids)))
    return results
