"""Per-partition stores of a table's committed rows: in memory, or RocksDB (rocksdict).

A store holds only what its changelog already holds: the engine writes a commit interval's rows
to the changelog first and applies them here once Kafka acknowledged them (with exactly-once,
once the transaction committed), together with the changelog offset they reach. So a store is
always a prefix of its changelog, and recovery is "read the changelog from the store's offset to
its end" — from the beginning for a new in-memory store, from the checkpoint for a RocksDB store
kept on disk (the offset is written in the same atomic batch as the rows it covers), after a
clean stop or a crash alike.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from evstream.streams.state.records import Row

__all__ = ["MemoryStore", "PartitionStore", "RocksStore", "open_store"]

_OFFSET_KEY = b"\x00evstream:changelog-offset"


class PartitionStore(Protocol):
    """The committed rows of one table partition and the changelog offset they reach."""

    changelog_offset: int  # the next changelog offset to read (0: nothing applied yet)

    def get(self, key: str) -> Row | None: ...
    def items(self) -> Iterator[tuple[str, Row]]: ...
    def apply(self, rows: Mapping[str, Row | None], changelog_offset: int) -> None: ...
    def close(self) -> None: ...
    def wipe(self) -> None: ...


class MemoryStore:
    """Rows in a dict (model instances kept: a read validates nothing)."""

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self.changelog_offset = 0

    def get(self, key: str) -> Row | None:
        return self.rows.get(key)

    def items(self) -> Iterator[tuple[str, Row]]:
        return iter(list(self.rows.items()))

    def apply(self, rows: Mapping[str, Row | None], changelog_offset: int) -> None:
        for key, row in rows.items():
            if row is None:
                self.rows.pop(key, None)
            else:
                self.rows[key] = row
        self.changelog_offset = max(self.changelog_offset, changelog_offset)

    def close(self) -> None:
        self.rows = {}

    def wipe(self) -> None:
        self.rows, self.changelog_offset = {}, 0


class RocksStore:
    """Rows in a RocksDB directory; the changelog offset is stored with them, atomically."""

    def __init__(self, path: Path) -> None:
        from rocksdict import Rdict  # noqa: PLC0415 - the rocksdb extra

        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db: Any = Rdict(str(path))
        offset = self._db.get(_OFFSET_KEY)
        self.changelog_offset = int(offset) if offset is not None else 0
        self._cache: dict[str, Row] = {}  # rows read since the last apply (models kept)

    def get(self, key: str) -> Row | None:
        row = self._cache.get(key)
        if row is not None:
            return row
        data = self._db.get(key.encode())
        if data is None:
            return None
        row = Row.from_bytes(data)
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[key] = row
        return row

    def items(self) -> Iterator[tuple[str, Row]]:
        for key, data in self._db.items():
            if key != _OFFSET_KEY:
                yield key.decode(), Row.from_bytes(data)

    def apply(self, rows: Mapping[str, Row | None], changelog_offset: int) -> None:
        from rocksdict import WriteBatch  # noqa: PLC0415

        batch = WriteBatch()
        for key, row in rows.items():
            if row is None:
                batch.delete(key.encode())
                self._cache.pop(key, None)
            else:
                batch.put(key.encode(), row.to_bytes())
                self._cache[key] = row
        self.changelog_offset = max(self.changelog_offset, changelog_offset)
        batch.put(_OFFSET_KEY, str(self.changelog_offset).encode())
        self._db.write(batch)

    def close(self) -> None:
        self._cache = {}
        self._db.close()

    def wipe(self) -> None:
        """Remove the files (the changelog no longer matches them: it was recreated or truncated)."""
        self._db.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        from rocksdict import Rdict  # noqa: PLC0415

        self._db = Rdict(str(self.path))
        self.changelog_offset, self._cache = 0, {}


def open_store(kind: str, data_dir: Path, table: str, partition: int) -> PartitionStore:
    """``memory://`` or ``rocksdb://`` for one table partition (files under ``data_dir``)."""
    if kind.startswith("rocksdb"):
        return RocksStore(data_dir / "tables" / table / str(partition))
    return MemoryStore()
