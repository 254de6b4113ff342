"""The gateway's Kafka side: one producer for single events, a transactional one for atomic batches.

Every call returns only after Kafka acknowledged (or refused) the events, within the gateway's
delivery timeout; failures become :class:`GatewayRequestError` 503s that say whether the events
were written (no), or may have been (indeterminate: a retry with the same Idempotency-Key
carries the same event id, so consumers drop the duplicate).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from evstream.errors import (
    DeliveryIndeterminateError,
    EncodeError,
    EvstreamError,
    GatewayRequestError,
    PublishError,
    RegistryError,
)
from evstream.producers.delivery import Delivery, DeliveryFuture
from evstream.producers.gateway.avro import unfit
from evstream.producers.gateway.http import InvalidEvent
from evstream.producers.gateway.settings import GatewaySettings
from evstream.producers.producer import EventProducer
from evstream.producers.settings import ProducerSettings
from evstream.schemas import Catalog, Event
from evstream.settings import KafkaSettings, RegistrySettings

__all__ = ["Outgoing", "Publisher"]

log = logging.getLogger("evstream.gateway")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One validated event bound for ``topic``, with its envelope's fields (None: generated)."""

    event: Event
    topic: str
    source: str
    event_id: UUID | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    traceparent: str | None = None

    def send(self, producer: EventProducer) -> DeliveryFuture:
        return producer.publish(
            self.event,
            topic=self.topic,
            source=self.source,
            event_id=self.event_id,
            correlation_id=self.correlation_id,
            causation_id=self.causation_id,
            traceparent=self.traceparent,
        )


def not_encodable(exc: EncodeError, event: Event, loc: list[str | int]) -> GatewayRequestError:
    """422 for an event that passed its model but not its Avro schema (e.g. a long out of range),
    located at the field; the codec's own message (schema, subject, Python internals) is only logged."""
    found = unfit(type(event).avro_schema_dict(), event.model_dump())
    where, msg = found if found is not None else ([], "Input does not fit the event's Avro schema")
    log.info("%s refused by its Avro schema: %s", event.event_type(), exc)
    full = [*loc, *where]
    return InvalidEvent(
        f"{event.event_type()}: {'.'.join(map(str, full)) or '(body)'}: {msg} (1 error(s))",
        [{"loc": full, "msg": msg, "type": "avro_range" if found else "avro_encode"}],
        1,
    )


def check_encodable(producer: EventProducer, batch: Sequence[Outgoing]) -> None:
    """Encode every event of ``batch`` once, so that none is produced if one cannot be."""
    for n, out in enumerate(batch):
        try:
            producer.encoder(out.topic, type(out.event))(out.event.model_dump())
        except EncodeError as exc:
            raise not_encodable(exc, out.event, ["events", n, "data"]) from exc


def retry_later(detail: str, title: str = "Kafka unavailable") -> GatewayRequestError:
    """A 503 the client may retry after a second; ``detail`` says whether anything was written."""
    return GatewayRequestError(503, title, detail, headers={"Retry-After": "1"})


def unavailable(exc: BaseException) -> GatewayRequestError:
    """The 503 for a publish that did not succeed, saying whether anything was written."""
    if isinstance(exc, DeliveryIndeterminateError | TimeoutError):
        written = "unknown: the delivery timed out in flight (retry with the same Idempotency-Key)"
    else:
        written = "no"
    return retry_later(f"{exc}; written: {written}")


def _outcome(exc: BaseException) -> str:
    """One line for a failure that nobody is waiting for any more (no traceback)."""
    if isinstance(exc, GatewayRequestError):
        return exc.detail
    return f"{type(exc).__name__}: {exc}"


def registry_unavailable(exc: RegistryError) -> GatewayRequestError:
    return retry_later(f"{exc}; written: no", "schema registry unavailable")


class Publisher:
    """Producers for the gateway; nothing connects until :meth:`start`."""

    def __init__(
        self,
        settings: GatewaySettings,
        catalog: Catalog,
        *,
        kafka: KafkaSettings | None = None,
        registry: RegistrySettings | None = None,
        producer: ProducerSettings | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self._kafka, self._registry = kafka, registry
        base = producer or ProducerSettings()
        self._producer_settings = base.model_copy(
            update={
                "delivery_timeout_ms": settings.delivery_timeout_ms,
                "linger_ms": settings.linger_ms,
                "source": "evstream-gateway",
            }
        )
        self._single: EventProducer | None = None
        self._atomic: EventProducer | None = None
        self._atomic_lock = asyncio.Lock()
        self._warm: set[tuple[EventProducer, str, type[Event]]] = set()
        self._ready_at = 0.0
        self._ready: str | None = "starting"

    @property
    def deadline_s(self) -> float:
        """How long a request may wait for Kafka: the delivery timeout plus a margin."""
        return self.settings.delivery_timeout_ms / 1000 + 2.0

    def topic_for(self, event_type: str) -> str:
        return self.settings.topics.get(event_type) or self.catalog.model(event_type).topic

    async def start(self) -> None:
        """Create the producer and fetch every event type's schema id (best effort)."""
        self._single = self._new_producer(None)
        await asyncio.to_thread(self._single.start)
        for model in self.catalog:
            try:
                await self._encoder_ready(self._single, self.topic_for(model.event_type()), model)
            except GatewayRequestError as exc:  # the registry may come up later: retried per request
                log.warning("schema of %s not ready yet: %s", model.event_type(), exc.detail)

    async def close(self) -> None:
        for producer in (self._single, self._atomic):
            if producer is not None:
                await asyncio.to_thread(producer.close, 5.0)
        self._single = self._atomic = None

    def _new_producer(self, transactional_id: str | None) -> EventProducer:
        settings = self._producer_settings
        if transactional_id is not None:
            settings = settings.model_copy(update={"transactional_id": transactional_id})
        return EventProducer(
            kafka=self._kafka, registry=self._registry, settings=settings, catalog=self.catalog
        )

    async def _encoder_ready(self, producer: EventProducer, topic: str, model: type[Event]) -> None:
        """Fetch or register the schema off the event loop (registry I/O), once per topic and type."""
        if (producer, topic, model) in self._warm:
            return
        try:
            await asyncio.to_thread(producer.encoder, topic, model)
        except RegistryError as exc:
            raise registry_unavailable(exc) from exc
        self._warm.add((producer, topic, model))

    # ------------------------------------------------------------------ publishing

    async def publish(self, out: Outgoing) -> Delivery:
        """Publish one event; the :class:`Delivery` once Kafka acknowledged it."""
        producer = self._require()
        await self._encoder_ready(producer, out.topic, type(out.event))
        try:
            future = out.send(producer)
        except EncodeError as exc:  # nothing was produced
            raise not_encodable(exc, out.event, []) from exc
        except PublishError as exc:  # refused at once (e.g. no broker reachable): not written
            raise unavailable(exc) from exc
        try:
            async with asyncio.timeout(self.deadline_s):
                return await future
        except (PublishError, TimeoutError) as exc:
            raise unavailable(exc) from exc

    async def publish_many(self, batch: Sequence[Outgoing]) -> list[Delivery | GatewayRequestError]:
        """Publish each event (not atomic); per event its delivery or the 503 it got.

        Every event is encoded first: one that does not fit its schema fails the whole batch (422)
        before anything is produced.
        """
        producer = self._require()
        for out in batch:
            await self._encoder_ready(producer, out.topic, type(out.event))
        check_encodable(producer, batch)
        futures: list[DeliveryFuture | GatewayRequestError] = []
        for out in batch:
            try:
                futures.append(out.send(producer))
            except PublishError as exc:
                futures.append(unavailable(exc))
        results: list[Delivery | GatewayRequestError] = []
        deadline = asyncio.get_running_loop().time() + self.deadline_s
        for future in futures:
            if isinstance(future, GatewayRequestError):
                results.append(future)
                continue
            try:
                async with asyncio.timeout_at(deadline):
                    results.append(await future)
            except (PublishError, TimeoutError) as exc:
                results.append(unavailable(exc))
        return results

    async def publish_atomic(self, batch: Sequence[Outgoing]) -> list[Delivery]:
        """Publish ``batch`` in one Kafka transaction: read-committed readers see all or none.

        One transaction at a time per process. The whole call, waiting for earlier transactions
        included, answers within the deadline; a transaction still running then finishes in its
        thread (and holds the lock until it does), and the answer is a 503 saying so.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        try:
            async with asyncio.timeout_at(deadline):
                await self._atomic_lock.acquire()
        except TimeoutError as exc:
            raise retry_later("earlier atomic batches are still running; written: no") from exc
        work = asyncio.ensure_future(asyncio.to_thread(self._atomic_batch, batch))
        abandoned = False  # the request was answered (503) or cancelled while the work ran on

        def finished(task: asyncio.Future[list[Delivery]]) -> None:
            # Every outcome is retrieved here: once the request stopped waiting (shield's waiter
            # cancelled) nobody else would, and asyncio would log "Task exception was never
            # retrieved" with its traceback. The late outcome is one warning line instead.
            self._atomic_lock.release()
            if task.cancelled():
                return
            exc = task.exception()
            if abandoned:
                log.warning(
                    "an atomic batch of %d event(s) finished after its request was answered: %s",
                    len(batch),
                    "committed" if exc is None else _outcome(exc),
                )

        work.add_done_callback(finished)
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(work)
        except TimeoutError as exc:
            abandoned = True
            raise retry_later(
                "the transaction did not finish in time; written: unknown (it may still commit "
                "or abort; retry with the same Idempotency-Key)"
            ) from exc
        except BaseException:  # cancelled (the client went away, shutdown): the work runs on
            abandoned = not work.done()
            raise

    def _atomic_batch(self, batch: Sequence[Outgoing]) -> list[Delivery]:
        """In a worker thread: (re)create the transactional producer if needed, run the transaction."""
        producer = self._atomic
        if producer is None:
            suffix = uuid.uuid4().hex[:8]  # unique even for equal host names and pids (containers)
            txn_id = f"{self.settings.transactional_id_prefix}-{socket.gethostname()}-{os.getpid()}-{suffix}"
            producer = self._new_producer(txn_id)
            try:
                producer.start()
            except EvstreamError as exc:
                producer.close(0.0)
                raise unavailable(exc) from exc
            self._atomic = producer
        try:
            check_encodable(producer, batch)  # fetches each schema id too (registry I/O: this thread)
            timeout = self.settings.delivery_timeout_ms / 1000
            with producer.transaction(timeout=timeout):
                futures = [out.send(producer) for out in batch]
            return [future.result(timeout=timeout) for future in futures]
        except GatewayRequestError:
            raise
        except RegistryError as exc:
            raise registry_unavailable(exc) from exc
        except (PublishError, TimeoutError) as exc:
            # EventProducer replaces its instance after a fatal error where it can (ProducerFatalError
            # with recovered=True): keep it then. One it could not recover, or whose transaction
            # outcome is unknown, is closed and a fresh one (new transactional id) made next time.
            if not producer.healthy or isinstance(exc, DeliveryIndeterminateError | TimeoutError):
                self._atomic = None
                producer.close(0.0)
            if isinstance(exc, DeliveryIndeterminateError | TimeoutError):
                raise retry_later(f"the transaction's outcome is unknown: {exc}; written: unknown") from exc
            raise retry_later(
                f"the batch was not committed: {exc}; written: no (aborted, invisible)"
            ) from exc

    # ------------------------------------------------------------------ readiness

    async def readiness(self) -> str | None:
        """None when a broker answers and every topic exists, else why not (cached for 1 s)."""
        if self._single is None:
            return "starting"
        health = self._single.health  # a fatal error, refused login, no broker for a while: no I/O
        if health is not None:
            return health
        if time.monotonic() - self._ready_at > 1.0:
            try:
                found = await asyncio.to_thread(
                    self._single.cluster_topics, self.settings.readiness_timeout_s
                )
                missing = sorted({self.topic_for(m.event_type()) for m in self.catalog} - found)
                self._ready = f"topics missing: {', '.join(missing)}" if missing else None
            except PublishError as exc:
                self._ready = str(exc)
            self._ready_at = time.monotonic()
        return self._ready

    def _require(self) -> EventProducer:
        if self._single is None:
            raise GatewayRequestError(503, "starting", "the gateway is not connected to Kafka yet")
        return self._single
