"""Typed tables: per-key state of a pydantic model, per partition, changelogged.

A table has one store per partition this worker owns (``stores``) and the rows written since the
last commit (``dirty``). Reads see the dirty rows first. At a commit the engine writes the dirty
rows to the changelog ``<app_id>-<table>-changelog`` (compacted, co-partitioned with the source)
and applies them to the stores once Kafka acknowledged them; an aborted commit drops them.
A key's row lives in the partition of the events that write it (the record being handled says
which): tables are co-partitioned with the topics of the handlers that declare them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Generic, Literal, NamedTuple, TypeVar

from pydantic import BaseModel

from evstream.errors import ConfigError, SkipEvent, WaitForRow
from evstream.streams.context import _RECEIVED, current_received
from evstream.streams.metrics import JOIN_MISSING
from evstream.streams.state.records import Row, first_application
from evstream.streams.state.stores import PartitionStore

if TYPE_CHECKING:
    from evstream.streams.joins import Waiting

__all__ = ["Change", "Table", "TableState"]

M = TypeVar("M", bound=BaseModel)

_ABSENT = object()


class Change(NamedTuple, Generic[M]):
    """What an applied update did: the value before (the model's default when new) and after."""

    before: M
    after: M


class TableState(Generic[M]):
    """The stores and pending rows of one table (the base of every table kind)."""

    def __init__(self, name: str, model: type[M], partitions: int, changelog: str) -> None:
        self.name = name
        self.model = model
        self.partitions = partitions
        self.changelog = changelog
        self.stores: dict[int, PartitionStore] = {}
        self.dirty: dict[int, dict[str, Row | None]] = {}
        self.slot = id(self)
        self.waiters: list[Waiting] = []  # handlers whose events wait for rows of this table

    # -- rows ---------------------------------------------------------------------------------------

    def _store(self, partition: int) -> PartitionStore:
        store = self.stores.get(partition)
        if store is None:
            raise ConfigError(
                f"table {self.name!r}: partition {partition} is not owned by this worker; declare the "
                "table in the handler's updates= or lookups= (app.on) so its partitions follow the topic's"
            )
        return store

    def row(self, partition: int, key: str) -> Row | None:
        pending = self.dirty.get(partition)
        if pending is not None:
            found = pending.get(key, _ABSENT)
            if found is not _ABSENT:
                return found  # type: ignore[return-value]  # a Row or None (deleted)
        return self._store(partition).get(key)

    def put(self, partition: int, key: str, row: Row | None) -> None:
        pending = self.dirty.get(partition)
        if pending is None:
            self._store(partition)  # owned, or a clear error
            pending = self.dirty[partition] = {}
        pending[key] = row

    def value(self, row: Row) -> M:
        model = row.model
        if isinstance(model, self.model):
            return model
        found = row.model = self.model.model_validate(row.value)
        return found

    def partition_rows(self, partition: int) -> Iterator[tuple[str, Row]]:
        """The rows of one owned partition, pending ones included."""
        pending = self.dirty.get(partition, {})
        for key, row in self._store(partition).items():
            if key not in pending:
                yield key, row
        for key, found in pending.items():
            if found is not None:
                yield key, found

    # -- engine hooks -------------------------------------------------------------------------------

    def take_dirty(self) -> dict[int, dict[str, Row | None]]:
        taken, self.dirty = self.dirty, {}
        return taken

    def discard(self) -> None:
        """Drop pending rows (an aborted transaction): caches built on them are rebuilt."""
        self.dirty = {}
        self.forget(None)

    def forget(self, partition: int | None) -> None:
        """Drop what is cached about ``partition`` (None: all): kinds with indexes override."""

    def close_partition(self, partition: int) -> None:
        self.forget(partition)
        self.dirty.pop(partition, None)
        store = self.stores.pop(partition, None)
        if store is not None:
            store.close()


class Table(TableState[M]):
    """Per-key state typed by a pydantic model, updated at most once per event."""

    def _partition(self) -> int:
        received = _RECEIVED.get()
        if received is None:
            raise ConfigError(f"table {self.name!r}: read and update it inside a handler (@app.on)")
        return received.partition

    def get(self, key: str) -> M | None:
        """The value of ``key`` (None when absent). Outside a handler: from any owned partition."""
        if _RECEIVED.get() is None:
            for partition in list(self.stores):
                row = self.row(partition, key)
                if row is not None:
                    return self.value(row)
            return None
        row = self.row(self._partition(), key)
        return None if row is None else self.value(row)

    def lookup(
        self, key: str, *, missing: Literal["skip", "emit_without", "wait"] = "emit_without"
    ) -> M | None:
        """A stream-table join: the row for ``key``. A missing row: ``"emit_without"`` returns
        None (the handler goes on without it); ``"skip"`` raises :class:`SkipEvent` (the event has
        no effect); ``"wait"`` raises :class:`WaitForRow`: the event is held until the row arrives
        (see :class:`~evstream.streams.Wait`; the handler must be declared with ``wait=`` and this
        table in its ``lookups``, and call this before its updates and publishes). Each miss is
        counted in ``evstream_stream_join_missing_total{table,missing}``."""
        row = self.get(key)
        if row is not None:
            return row
        if missing == "wait":
            received = current_received()
            waiting = received._waiting
            if waiting is None or self not in waiting.tables:
                raise ConfigError(
                    f"{self.name}: lookup(missing='wait') needs its handler declared with "
                    "app.on(..., lookups=[this table], wait=Wait(...))"
                )
            if received._expired:  # waited long enough: emit without it
                return None
            if received._decisions or received._published:
                raise ConfigError(
                    f"{self.name}: call lookup(missing='wait') before the handler's updates and "
                    "publishes (a held event's handler runs again from the start)"
                )
            raise WaitForRow(self.name, key)
        JOIN_MISSING.labels(self.name, missing).inc()
        if missing == "skip":
            raise SkipEvent(f"{self.name}: no row for {key!r}")
        return None

    def update(self, key: str, change: Callable[[M], M]) -> Change[M] | None:
        """Apply ``change`` to the value of ``key`` (the model's defaults when absent) unless this
        event was already applied to it; returns the change, or None for an event applied before.
        ``change`` returns a new value and leaves its argument as it is (it is the stored value:
        rows keep their model instances, and an aborted interval must not have changed them)."""
        received = current_received()
        partition = received.partition
        row = self.row(partition, key)
        if not first_application(self.name, self.slot, received, key, row):
            return None
        before: M = self.model() if row is None else self.value(row)
        after = change(before)
        base = row if row is not None else Row({})
        self.put(partition, key, base.applied_after(received, after))
        for waiting in self.waiters:  # a held event may be waiting for this row
            waiting.row_written(self.name, key)
        return Change(before, after)

    def items(self) -> Iterator[tuple[str, M]]:
        """The stored values of the partitions this worker owns (pending writes included)."""
        for partition in list(self.stores):
            for key, row in self.partition_rows(partition):
                yield key, self.value(row)
