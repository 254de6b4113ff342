"""Avro schema compatibility, offline, composed from Apache avro's reader/writer checker.

Modes follow the Confluent registry: BACKWARD (the new schema reads data written with the
previous one), FORWARD (the previous schema reads data written with the new one), FULL (both);
the ``_TRANSITIVE`` forms check against every earlier version instead of only the latest; NONE
checks nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from evstream.schemas.events import Compatibility

__all__ = ["Incompatibility", "incompatibilities"]


@dataclass(frozen=True)
class Incompatibility:
    """One way a new schema fails against one earlier version."""

    version: int
    direction: str  # "new reads v<N>" or "v<N> reads new"
    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.direction}: {self.message} at {self.location}"


def _parse(schema: dict[str, Any]) -> avro.schema.Schema:
    return avro.schema.parse(json.dumps(schema))


def _check(
    reader: dict[str, Any], writer: dict[str, Any], version: int, direction: str
) -> list[Incompatibility]:
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]  # avro ships no annotations here
    result = checker.get_compatibility(_parse(reader), _parse(writer))
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    kinds = ", ".join(sorted(k.value.replace("_", " ") for k in result.incompatibilities))
    fields = ", ".join(sorted(str(m) for m in result.messages))
    locations = ", ".join(sorted(result.locations))
    return [Incompatibility(version, direction, locations, f"{kinds} ({fields})")]


def incompatibilities(
    new: dict[str, Any], history: Sequence[tuple[int, dict[str, Any]]], mode: Compatibility
) -> list[Incompatibility]:
    """What breaks if ``new`` follows ``history`` (``(version, schema)`` pairs, oldest first)."""
    if mode == "NONE" or not history:
        return []
    against = history if mode.endswith("_TRANSITIVE") else history[-1:]
    problems: list[Incompatibility] = []
    for version, old in against:
        if mode.startswith(("BACKWARD", "FULL")):
            problems += _check(new, old, version, f"new reads v{version}")
        if mode.startswith(("FORWARD", "FULL")):
            problems += _check(old, new, version, f"v{version} reads new")
    return problems
