"""faust's aiokafka transport with two fixes for partitions that are never processed after a rebalance.

A faust app opts in with ``broker_consumer=["evkafka://host:port"]`` (:data:`SCHEME`, registered
when this module is imported; see ``streams/examples/faust_totals.py``): faust's own aiokafka
transport, with a consumer that differs in two methods.

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

It also **surfaces refused ACLs** that faust never asks aiokafka about (:func:`refused`): faust
fetches with ``Fetcher.fetched_records``, bypassing ``AIOKafkaConsumer.getmany``, the only caller
of the group coordinator's ``check_errors``; so a principal without READ on the consumer group
waits for ever for an error nobody collects, one without DESCRIBE on a source topic joins without
it (its partitions are simply never assigned), and a fetch refused for want of READ on a topic
crashes faust's fetcher with a traceback. :func:`refused` reads all three as a typed
:class:`~evstream.errors.AuthorizationError`; ``evstream worker`` polls it and stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Set
from typing import Any, ClassVar

from aiokafka.errors import (  # type: ignore[import-untyped]  # no py.typed
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
)
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.transports import ConsumerT

from evstream.errors import AuthorizationError
from evstream.streams.engine.refusals import group_refused, topic_refused

__all__ = ["SCHEME", "Consumer", "ConsumerThread", "Transport", "refused", "rewind_uncommitted"]

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


def refused(app: Any) -> AuthorizationError | None:
    """The refused ACL that keeps ``app``'s consumer (a faust app on :class:`Transport`) from
    working, or None: a READ refused by a fetch (recorded by :class:`Consumer`), an error the group
    coordinator holds for a caller faust never makes (READ on the group, or on a topic at commit),
    or a subscribed topic the metadata says the principal may not DESCRIBE. Safe to call from any
    thread (it reads attributes only) and before the consumer exists."""
    found: AuthorizationError | None = getattr(app, "evstream_refused", None)
    if found is not None:
        return found
    consumer = getattr(getattr(getattr(app, "_consumer", None), "_thread", None), "_consumer", None)
    if consumer is None:
        return None
    pending = getattr(getattr(consumer, "_coordinator", None), "_pending_exception", None)
    if isinstance(pending, GroupAuthorizationFailedError):
        return group_refused(str(pending.args[0]) if pending.args else app.conf.id)
    if isinstance(pending, TopicAuthorizationFailedError):
        return topic_refused(_first(pending.args[0] if pending.args else "?"), "READ")
    subscribed = set(getattr(getattr(consumer, "_subscription", None), "topics", None) or ())
    cluster = getattr(getattr(consumer, "_client", None), "cluster", None)
    hidden = subscribed & set(getattr(cluster, "unauthorized_topics", None) or ())
    if hidden:
        return topic_refused(min(hidden), "DESCRIBE")
    return None


def _first(topics: Any) -> str:
    return min(str(t) for t in topics) if isinstance(topics, set | frozenset | list | tuple) else str(topics)


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

    async def _getmany(self, active_partitions: Set[TP] | None, timeout: float) -> Any:
        if getattr(self.app, "evstream_refused", None) is not None:  # stopping: nothing to fetch
            await asyncio.sleep(timeout)
            return {}
        snapshot = None if active_partitions is None else frozenset(active_partitions)  # before any await
        if snapshot is not None and not snapshot:  # faust checks this just before; empty would mean "all"
            await asyncio.sleep(timeout)
            return {}
        try:  # None: a client-only app, every assigned partition
            return await super()._getmany(snapshot, timeout)  # type: ignore[arg-type]
        except TopicAuthorizationFailedError as exc:  # no READ: kept for the worker, not a traceback
            topic = _first(exc.args[0] if exc.args else "?")
            self.app.evstream_refused = topic_refused(topic, "READ")  # type: ignore[attr-defined]
            log.error("fetch refused: no READ on topic %s; the worker stops", topic)
            return {}


class Transport(faust_aiokafka.Transport):
    """faust's aiokafka transport with :class:`Consumer`."""

    Consumer: ClassVar[type[ConsumerT]] = Consumer


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
