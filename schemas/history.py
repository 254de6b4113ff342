"""The committed schema history: ``schemas/avro/<subject>/v<N>.avsc``, and the gate over it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evstream.errors import IncompatibleSchemaError, SchemaHistoryError
from evstream.schemas.catalog import Catalog
from evstream.schemas.compat import incompatibilities
from evstream.schemas.events import Event
from evstream.settings import ProjectSettings

__all__ = ["DEMO_ROOT", "SchemaHistory", "SubjectReport", "bump", "check", "default_root"]

# The demo domain's history, shipped with the package. A project's own history is elsewhere:
# ProjectSettings.schema_dir (EVSTREAM_SCHEMA_DIR, [tool.evstream] schema_dir, else schemas/avro
# in the project root).
DEMO_ROOT = Path(__file__).resolve().parent / "avro"


def default_root() -> Path:
    """The project's committed history: :attr:`ProjectSettings.schema_dir`."""
    return ProjectSettings().schema_dir


_VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")


def canonical(schema: dict[str, Any]) -> str:
    """Key-sorted compact JSON: equal schemas give equal text."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


class SchemaHistory:
    """Reads and writes version files under ``root`` (one folder per subject; default the
    project's :func:`default_root`)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else default_root()

    def versions(self, subject: str) -> list[tuple[int, dict[str, Any]]]:
        """``(version, schema)`` pairs, oldest first; versions must run 1, 2, 3... without gaps."""
        folder = self.root / subject
        if not folder.is_dir():
            return []
        found = []
        for path in folder.iterdir():
            match = _VERSION_FILE.match(path.name)
            if match:
                try:
                    found.append((int(match.group(1)), json.loads(path.read_text())))
                except json.JSONDecodeError as exc:
                    raise SchemaHistoryError(f"{path}: not valid JSON ({exc})") from exc
        found.sort(key=lambda pair: pair[0])
        numbers = [n for n, _ in found]
        if numbers != list(range(1, len(numbers) + 1)):
            raise SchemaHistoryError(f"{folder}: versions {numbers} are not 1..{len(numbers)}")
        return found

    def write(self, subject: str, version: int, schema: dict[str, Any]) -> Path:
        folder = self.root / subject
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"v{version}.avsc"
        path.write_text(json.dumps(schema, indent=2) + "\n")
        return path


@dataclass(frozen=True)
class SubjectReport:
    """The gate's verdict on one subject."""

    subject: str
    event_type: str
    mode: str
    latest: int  # 0 when nothing is committed
    changed: bool  # the model differs from the latest committed version
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.changed


def _report(model: type[Event], subject: str, history: SchemaHistory) -> SubjectReport:
    schema = model.avro_schema_dict()
    versions = history.versions(subject)
    problems: list[str] = []
    # The committed history itself must follow the mode, version by version.
    for index in range(1, len(versions)):
        version, old = versions[index]
        for bad in incompatibilities(old, versions[:index], model.compatibility):
            problems.append(f"{subject} v{version}: incompatible under {model.compatibility}: {bad}")
    latest = versions[-1][0] if versions else 0
    changed = not versions or canonical(versions[-1][1]) != canonical(schema)
    if changed:
        breaks = incompatibilities(schema, versions, model.compatibility)
        for bad in breaks:
            problems.append(
                f"{subject} model (would be v{latest + 1}): incompatible under {model.compatibility}: {bad}"
            )
        if not breaks:
            what = "has no committed version" if not versions else f"differs from committed v{latest}"
            problems.append(f"{subject}: the model {what}; run `evstream schemas bump`")
    return SubjectReport(subject, model.event_type(), model.compatibility, latest, changed, tuple(problems))


def check(catalog: Catalog, history: SchemaHistory) -> list[SubjectReport]:
    """One report per event type; the gate passes when every report is ok.

    Subjects follow the catalog's subject strategy (or the model's own).
    """
    return [_report(model, catalog.subject(model), history) for model in catalog]


def bump(catalog: Catalog, history: SchemaHistory) -> list[Path]:
    """Write the next version file for every changed model whose change keeps its mode.

    Raises :class:`IncompatibleSchemaError` (writing nothing) if any change breaks its mode.
    """
    reports = check(catalog, history)
    broken = [p for r in reports if r.changed for p in r.problems if "incompatible" in p]
    if broken:
        raise IncompatibleSchemaError("; ".join(broken))
    written = []
    for model, report in zip(catalog, reports, strict=True):
        if report.changed:
            written.append(history.write(report.subject, report.latest + 1, model.avro_schema_dict()))
    if not written and any(not r.ok for r in reports):
        raise SchemaHistoryError("; ".join(p for r in reports for p in r.problems))
    return written
