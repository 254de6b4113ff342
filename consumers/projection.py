"""A demo projection: the current state of every order, in SQLite, fed by the ``orders`` topic.

Applying an event is idempotent: each row remembers the partition offset of the last event it
applied and ignores anything at or before it, so at-least-once redelivery cannot double count.
That is also what makes a rebuild comparable row by row with the live table.

Rebuild recipe (README "Replay"): replay ``orders`` from offset 0 into a fresh table with
:class:`evstream.consumers.replay.BoundedReplay`, :func:`compare` it with the live table, then
:func:`swap` them. From the CLI, point ``EVSTREAM_PROJECTION_DB`` / ``EVSTREAM_PROJECTION_TABLE``
at the new table and use ``--handler evstream.consumers.projection:handlers``.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

from evstream.consumers.handlers import Handlers, MessageContext
from evstream.errors import ConfigError
from evstream.schemas.domain import OrderCancelled, OrderPlaced, OrderShipped, PaymentCaptured
from evstream.schemas.domain.orders import OrderEvent

__all__ = ["OrderProjection", "compare", "swap"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
COLUMNS = (
    "order_id, customer_id, status, currency, total_minor, paid_minor, refunded_minor, events,"
    " last_partition, last_offset"
)
_NAMES = COLUMNS.replace(" ", "").split(",")


def _table(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"not a table name: {name!r}")
    return name


class OrderProjection:
    """Order states in table ``table`` of the SQLite file ``path`` (created on first use)."""

    def __init__(self, path: Path, table: str = "order_state") -> None:
        self.path = path
        self.table = _table(table)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> OrderProjection:
        """``EVSTREAM_PROJECTION_DB`` (default ``orders.db``) and ``EVSTREAM_PROJECTION_TABLE``."""
        return cls(
            Path(os.environ.get("EVSTREAM_PROJECTION_DB", "orders.db")),
            os.environ.get("EVSTREAM_PROJECTION_TABLE", "order_state"),
        )

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} (order_id TEXT PRIMARY KEY, customer_id TEXT,"
                " status TEXT NOT NULL, currency TEXT, total_minor INTEGER, paid_minor INTEGER NOT NULL,"
                " refunded_minor INTEGER NOT NULL, events INTEGER NOT NULL, last_partition INTEGER NOT NULL,"
                " last_offset INTEGER NOT NULL)"
            )
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def handlers(self) -> Handlers:
        handlers = Handlers()
        handlers.on(OrderPlaced, PaymentCaptured, OrderShipped, OrderCancelled)(self.apply)
        return handlers

    def apply(self, event: OrderEvent, ctx: MessageContext) -> None:
        """Fold one order event into its row (a no-op for an event already applied)."""
        with self._lock:
            db = self._conn()
            found = db.execute(
                f"SELECT {COLUMNS} FROM {self.table} WHERE order_id = ?",  # noqa: S608 - name checked
                (event.order_id,),
            ).fetchone()
            row = dict(zip(_NAMES, found, strict=True)) if found else None
            _topic, partition, offset = ctx.source  # the original record, not a retry topic's
            if row is not None and row["last_partition"] == partition and offset <= row["last_offset"]:
                return  # redelivered: already in the row
            row = row or {
                "order_id": event.order_id,
                "customer_id": None,
                "status": "unknown",
                "currency": None,
                "total_minor": None,
                "paid_minor": 0,
                "refunded_minor": 0,
                "events": 0,
            }
            if isinstance(event, OrderPlaced):
                row |= {
                    "customer_id": event.customer_id,
                    "status": "placed",
                    "currency": event.total.currency.value,
                    "total_minor": event.total.amount_minor,
                }
            elif isinstance(event, PaymentCaptured):
                row |= {"status": "paid", "paid_minor": row["paid_minor"] + event.amount.amount_minor}
            elif isinstance(event, OrderShipped):
                row["status"] = "shipped"
            elif isinstance(event, OrderCancelled):
                refund = event.refund.amount_minor if event.refund else 0
                row |= {"status": "cancelled", "refunded_minor": row["refunded_minor"] + refund}
            row |= {"events": row["events"] + 1, "last_partition": partition, "last_offset": offset}
            db.execute(
                f"INSERT OR REPLACE INTO {self.table} ({COLUMNS}) VALUES ({', '.join('?' * 10)})",  # noqa: S608
                tuple(row[c] for c in _NAMES),
            )

    def rows(self) -> list[tuple[Any, ...]]:
        with self._lock:
            query = f"SELECT {COLUMNS} FROM {self.table} ORDER BY order_id"  # noqa: S608 - name checked
            return self._conn().execute(query).fetchall()


def compare(path: Path, live: str, rebuilt: str, *, limit: int = 20) -> list[str]:
    """Row-by-row differences between two projection tables ([] when equal)."""
    a, b = OrderProjection(path, live), OrderProjection(path, rebuilt)
    try:
        left = {r[0]: r for r in a.rows()}
        right = {r[0]: r for r in b.rows()}
    finally:
        a.close()
        b.close()
    diffs = []
    for order_id in sorted(set(left) | set(right)):
        if left.get(order_id) != right.get(order_id):
            diffs.append(f"{order_id}: {live}={left.get(order_id)} {rebuilt}={right.get(order_id)}")
            if len(diffs) >= limit:
                break
    return diffs


def swap(path: Path, live: str, rebuilt: str) -> None:
    """Make ``rebuilt`` the live table in one transaction; the old one is kept as ``<live>_previous``."""
    live, rebuilt = _table(live), _table(rebuilt)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute(f"DROP TABLE IF EXISTS {live}_previous")
        db.execute(f"ALTER TABLE {live} RENAME TO {live}_previous")
        db.execute(f"ALTER TABLE {rebuilt} RENAME TO {live}")
        db.execute("COMMIT")
    finally:
        db.close()


def __getattr__(name: str) -> Handlers:
    """``evstream.consumers.projection:handlers`` for the CLI: a projection configured from env."""
    if name == "handlers":
        return OrderProjection.from_env().handlers
    raise AttributeError(name)
