"""faust's aiokafka transport with two fixes for partitions that are never processed after a rebalance.

The demo app consumes through ``evkafka://`` (:data:`SCHEME`): faust's own aiokafka transport,
with a consumer that differs in two methods.

1. **Fetch only the partitions faust asked for.** faust hands its *live* set of active partitions
   to aiokafka's ``Fetcher.fetched_records``, which runs later in the consumer thread. A rebalance
   (``Consumer.pause_partitions``) or table recovery empties that set in place meanwhile, and
   aiokafka reads an empty set as "every partition": it drains all buffered records, moving the
   positions, and faust then drops the records of partitions it does not consider active. Here
   the fetcher gets a copy taken when faust decides what to fetch.

2. **Rewind partitions without a committed offset too.** After a rebalance faust undoes such
   drops by seeking every partition back to its committed offset (``perform_seek``), but
   aiokafka's ``seek_to_committed`` only seeks partitions whose committed offset is above 0. A
   partition nobody has committed yet (its previous owner died before its first commit) stayed
   where the dropped records left it, usually at the end: never processed, lag for ever, and the
   same again on the next owner. Here such a partition goes where a fresh consumer would start
   it: ``consumer_auto_offset_reset``, or offset 0 when 0 was committed.

Both depend on faust-streaming internals (``ThreadDelegateConsumer._getmany``,
``AIOKafkaConsumerThread.call_thread``); ``tests/unit/test_stream_transport.py`` pins them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Set
from typing import Any, ClassVar

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.transports import ConsumerT

__all__ = ["SCHEME", "Consumer", "ConsumerThread", "Transport", "rewind_uncommitted"]

log = logging.getLogger(__name__)

SCHEME = "evkafka"
"""URL scheme of :class:`Transport` (``broker_consumer=["evkafka://host:port"]``)."""


async def rewind_uncommitted(
    consumer: Any,
    committed: Mapping[Any, int | None],
    reset: str,
    skip: Callable[[Any], bool],
) -> list[Any]:
    """Seek the partitions of ``committed`` whose offset aiokafka's ``seek_to_committed`` left
    alone (None or 0) to where a consumer without a committed offset starts; returns them.

    ``consumer`` is the ``aiokafka.AIOKafkaConsumer`` (untyped, hence Any); ``reset`` the auto
    offset reset policy; ``skip`` selects partitions to leave alone (faust's changelogs: table
    recovery positions them). "earliest" seeks to offset 0, at once: when retention has removed
    it the fetch is out of range and aiokafka resets to the earliest offset (the same policy).
    """
    moved = []
    to_end = []
    for tp, offset in committed.items():
        if skip(tp) or offset not in (None, 0):
            continue
        if offset == 0 or reset == "earliest":
            consumer.seek(tp, 0)
        elif reset == "latest":
            to_end.append(tp)
        else:  # "none": there is no policy to apply; the partition may stay where faust left it
            log.warning("%s has no committed offset and auto offset reset is none: not rewound", tp)
            continue
        moved.append(tp)
    if to_end:
        await consumer.seek_to_end(*to_end)
    if moved:
        log.info("no committed offset: %s rewound (auto offset reset %s)", sorted(moved), reset)
    return moved


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Seeks partitions without a committed offset as well (fix 2 of the module docstring)."""

    async def seek_to_committed(self) -> Mapping[TP, int]:
        return await self.call_thread(self._seek_to_committed)  # type: ignore[no-any-return]

    async def _seek_to_committed(self) -> Mapping[TP, int]:
        consumer = self._ensure_consumer()
        committed: Mapping[TP, int] = await consumer.seek_to_committed()
        changelogs = self.app.tables.changelog_topics
        await rewind_uncommitted(
            consumer,
            committed,
            self.app.conf.consumer_auto_offset_reset,
            lambda tp: tp.topic in changelogs,
        )
        return committed


class Consumer(faust_aiokafka.Consumer):
    """Hands the fetcher a copy of the active partitions (fix 1) and seeks with
    :class:`ConsumerThread` (fix 2)."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _commit_offsets(self, offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
        """Write an evstream App's pending table state first (its checkpoint), then commit."""
        checkpoint = getattr(self.app, "evstream_checkpoint", None)
        if checkpoint is not None:
            await checkpoint()
        return await super()._commit_offsets(offsets, start_new_transaction=start_new_transaction)

    async def _getmany(self, active_partitions: Set[TP] | None, timeout: float) -> Any:
        if active_partitions is None:  # a client-only app: every assigned partition
            return await super()._getmany(None, timeout)
        snapshot = frozenset(active_partitions)  # before the first await: what faust asked for
        if not snapshot:  # faust checks this just before calling; an empty set would mean "all"
            await asyncio.sleep(timeout)
            return {}
        return await super()._getmany(snapshot, timeout)  # type: ignore[arg-type]


class Transport(faust_aiokafka.Transport):
    """faust's aiokafka transport with :class:`Consumer`."""

    Consumer: ClassVar[type[ConsumerT]] = Consumer


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
