"""Idempotency by event id: a store that remembers handled ids for a while (SQLite by default)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol
from uuid import UUID

__all__ = ["DedupeStore", "InMemoryDedupeStore", "SQLiteDedupeStore"]


class DedupeStore(Protocol):
    """Remembers handled event ids; ``seen`` before handling, ``mark`` after success."""

    def seen(self, event_id: UUID) -> bool: ...

    def mark(self, event_id: UUID) -> None: ...

    def close(self) -> None: ...


class InMemoryDedupeStore:
    """For tests and single-process use; bounded by ``max_entries`` (oldest forgotten first)."""

    def __init__(self, *, max_entries: int = 1_000_000) -> None:
        self._ids: dict[UUID, None] = {}
        self._max = max_entries

    def seen(self, event_id: UUID) -> bool:
        return event_id in self._ids

    def mark(self, event_id: UUID) -> None:
        self._ids[event_id] = None
        if len(self._ids) > self._max:
            del self._ids[next(iter(self._ids))]

    def close(self) -> None:
        self._ids.clear()


class SQLiteDedupeStore:
    """Embedded, durable across restarts; entries older than ``ttl_s`` are pruned."""

    def __init__(self, path: Path, *, ttl_s: float = 7 * 24 * 3600) -> None:
        self.path = path
        self.ttl_s = ttl_s
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._marks = 0

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS handled (event_id TEXT PRIMARY KEY, at REAL NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS handled_at ON handled (at)")
            self._db = db
        return self._db

    def seen(self, event_id: UUID) -> bool:
        with self._lock:
            row = (
                self._conn()
                .execute(
                    "SELECT 1 FROM handled WHERE event_id = ? AND at >= ?",
                    (str(event_id), time.time() - self.ttl_s),
                )
                .fetchone()
            )
        return row is not None

    def mark(self, event_id: UUID) -> None:
        with self._lock:
            db = self._conn()
            db.execute(
                "INSERT OR REPLACE INTO handled (event_id, at) VALUES (?, ?)", (str(event_id), time.time())
            )
            self._marks += 1
            if self._marks % 10_000 == 0:
                db.execute("DELETE FROM handled WHERE at < ?", (time.time() - self.ttl_s,))

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
