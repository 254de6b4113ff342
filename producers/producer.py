"""EventProducer: validate -> encode (Avro, registry ids) -> produce with key and envelope headers.

One librdkafka producer underneath, driven by a background poll thread that resolves each
publish's :class:`DeliveryFuture` when the broker acknowledges it. :class:`AsyncEventProducer`
awaits the same futures, so the sync and async APIs share one implementation.

Outcomes, exactly:

* :class:`Delivery` — acknowledged (``acks=all``): written at that offset.
* :class:`DeliveryFailedError` — not written: the broker refused it, it was purged from the local
  queue before it was ever sent, or its transaction was aborted (or fenced, which aborts it).
  :class:`ClusterUnavailableError` is the case where no broker has answered for
  ``cluster_down_fail_s``: publish() refuses at once, and events queued *after* the cluster went
  down are failed (they cannot have been sent).
* :class:`DeliveryIndeterminateError` — possibly written: the delivery timed out or was purged
  while a request carrying it may have reached a broker (in flight, or queued again for a retry
  after a send), events queued *before* the cluster went down and purged since, and a transaction
  whose commit failed with a fatal error (its EndTxn may have been applied).
* :class:`ProducerFatalError` — librdkafka's instance is unusable (``healthy`` is False): a
  transactional producer replaces it (a new instance with the same ``transactional.id`` fences the
  old one, ``recovered=True``) unless the error is ``_FENCED`` (another instance owns the id; see
  ``ProducerSettings.recover_fenced``); a non-transactional one keeps failing until recreated.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from types import TracebackType
from typing import Any, NoReturn, Self
from uuid import UUID

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient

from evstream.errors import (
    ClusterUnavailableError,
    DeliveryFailedError,
    DeliveryIndeterminateError,
    EnvelopeError,
    EvstreamError,
    KafkaSecurityError,
    ProducerFatalError,
    PublishError,
    RegistryUnavailableError,
)
from evstream.producers.delivery import Delivery, DeliveryFuture, DeliveryTally, classify
from evstream.producers.metrics import PUBLISH_LATENCY, PUBLISHED
from evstream.producers.settings import ProducerSettings
from evstream.schemas import AvroCodec, Catalog, Envelope, Event, RegistrySchemaStore, SchemaStore
from evstream.schemas.causation import current_cause
from evstream.schemas.events import check_traceparent, envelope_headers
from evstream.schemas.ids import new_event_id
from evstream.security import publish_refusal, security_error
from evstream.settings import (
    KafkaSettings,
    ProjectSettings,
    RegistrySettings,
    librdkafka_config,
    project_catalog,
)

__all__ = ["AsyncEventProducer", "EventProducer", "producer_health"]

Encoder = Callable[[dict[str, Any]], bytes]
_PUBLISH_OPTIONS = frozenset(
    {
        "topic",
        "key",
        "source",
        "correlation_id",
        "causation_id",
        "traceparent",
        "envelope",
        "extra_headers",
        "event_id",
    }
)
log = logging.getLogger("evstream.producer")
_LIVE: weakref.WeakSet[EventProducer] = weakref.WeakSet()  # started and not closed, in this process


def producer_health() -> str | None:
    """None while every started producer of this process is healthy, else what ails the first
    that is not (its ``client.id`` and :attr:`EventProducer.health`): part of workers' ``/readyz``."""
    for producer in list(_LIVE):
        reason = producer.health
        if reason is not None and producer._producer is not None:
            name = producer.settings.transactional_id or producer._conf.get("client.id", "?")
            return f"producer {name}: {reason}"
    return None


def _commit(producer: Producer, timeout: float) -> None:
    """``commit_transaction``, retried while librdkafka says a retry may still commit (a moved or
    restarted coordinator, a request timeout) and ``timeout`` allows; the last error is raised."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            producer.commit_transaction(max(0.5, deadline - time.monotonic()))
            return
        except KafkaException as exc:
            err = exc.args[0]
            if err.fatal() or err.txn_requires_abort() or not err.retriable():
                raise
            if time.monotonic() >= deadline:
                raise
            log.warning("commit_transaction failed (%s): retrying", err.str())


class EventProducer:
    """Publish schema-validated events. Constructing it does no I/O; :meth:`start` connects.

    Use as a context manager, or call :meth:`start` and :meth:`close`. Each publish returns a
    :class:`DeliveryFuture` resolving to a :class:`Delivery` (topic, partition, offset) or raising
    :class:`DeliveryFailedError` (not written) / :class:`DeliveryIndeterminateError` (timed out
    in flight: possibly written).
    """

    def __init__(
        self,
        *,
        kafka: KafkaSettings | None = None,
        registry: RegistrySettings | None = None,
        settings: ProducerSettings | None = None,
        schema_store: SchemaStore | None = None,
        catalog: Catalog | None = None,
        on_error: Callable[[UUID, PublishError], None] | None = None,
    ) -> None:
        self._kafka = kafka
        self._registry_settings = registry
        self.settings = settings or ProducerSettings()
        self._store = schema_store
        self._catalog = catalog
        self._producer: Producer | None = None
        self._registry_client: SchemaRegistryClient | None = None
        self._codec: AvroCodec | None = None
        self._encoders: dict[tuple[str, type[Event]], Encoder] = {}
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._in_transaction = False
        self._cond = threading.Condition()  # shared by every DeliveryFuture of this producer
        self._metric_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._acked_lock = threading.Lock()  # delivery reports may be served by two threads
        self._acked_counts: dict[tuple[str, str], int] = {}  # acked, not yet in the counter
        self._acked_n = 0
        self._last_publish = 0.0
        self._txn_futures: list[tuple[DeliveryFuture, DeliveryFuture, str, UUID]] = []
        self._conf: dict[str, Any] = {}
        self._down_since: float | None = None  # perf_counter() when librdkafka said all brokers down
        self._fatal: ProducerFatalError | None = None  # an unrecovered fatal error of the instance
        self._security: KafkaSecurityError | None = None  # login/TLS refused (until a broker is up)
        self.recoveries = 0  # instances replaced after a fatal error
        self.sent = DeliveryTally(self, on_error=on_error, keep_errors=10_000)  # send()'s outcomes

    # ------------------------------------------------------------------ lifecycle

    @property
    def catalog(self) -> Catalog:
        """The catalog :meth:`publish_dict` validates with: the one given, else the project's
        (``EVSTREAM_CATALOG`` / ``[tool.evstream] catalog``); :class:`ConfigError` if neither."""
        if self._catalog is None:
            self._catalog = project_catalog()
        return self._catalog

    def start(self) -> Self:
        """Create the Kafka producer and registry client; init transactions if configured.

        A configured project catalog is loaded here (publishing model instances needs none).
        """
        if self._producer is not None:
            return self
        if self._catalog is None and ProjectSettings().catalog is not None:
            self._catalog = project_catalog()
        conf = librdkafka_config(self._kafka or KafkaSettings(), **self.settings.librdkafka())
        # Cluster health: all-brokers-down and fatal errors (error_cb), brokers up again (stats).
        conf.update(error_cb=self._on_error, stats_cb=self._on_stats)
        conf.setdefault("statistics.interval.ms", 1000)
        self._conf = conf
        store = self._store
        client = None
        if store is None:
            registry = self._registry_settings or RegistrySettings()
            client = SchemaRegistryClient(registry.client_config())  # every call bounded (timeouts)
            store = RegistrySchemaStore(client)
        producer = Producer(conf)
        try:
            if self.settings.transactional_id is not None:
                producer.init_transactions(min(30.0, self.settings.delivery_timeout_ms / 1000))
        except KafkaException as exc:
            if client is not None:
                client.close()
            raise PublishError(f"cannot initialise transactions: {exc}") from exc
        self._registry_client, self._codec = client, AvroCodec(store)
        self._fatal, self._down_since = None, None
        self._run(producer)
        return self

    def _run(self, producer: Producer) -> None:
        """Make ``producer`` the instance and start its poll thread."""
        self._producer = producer
        _LIVE.add(self)
        self._stop.clear()
        self._poller = threading.Thread(target=self._poll_loop, name="evstream-producer-poll", daemon=True)
        self._poller.start()

    # ------------------------------------------------------------------ health

    @property
    def health(self) -> str | None:
        """None while healthy, else why not: not started, an unrecovered fatal error, a refused
        login or TLS handshake, or no broker reachable for longer than ``cluster_down_fail_s``.

        Shown by the ``/readyz`` of the gateway and of workers (:func:`producer_health`)."""
        if self._producer is None:
            return "not started"
        if self._fatal is not None:
            return str(self._fatal)
        if self._security is not None:
            return str(self._security)
        down = self._cluster_down_for()
        if down is not None:
            return f"no Kafka broker reachable for {down:.0f} s"
        return None

    @property
    def healthy(self) -> bool:
        """True while :attr:`health` has nothing to say."""
        return self.health is None

    @property
    def fatal_error(self) -> ProducerFatalError | None:
        """The fatal error that left this producer unusable (None while it is usable)."""
        return self._fatal

    def _cluster_down_for(self) -> float | None:
        """How long no broker has been reachable, once that is longer than ``cluster_down_fail_s``."""
        since = self._down_since
        if since is None:
            return None
        down = time.perf_counter() - since
        return down if down > self.settings.cluster_down_fail_s else None

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's error_cb (served by poll): all brokers down, fatal errors; the rest is logged."""
        security = security_error(err, user=(self._kafka or KafkaSettings()).sasl_username)
        if security is not None:  # wrong password, unknown user, TLS mismatch: fail now, not at a timeout
            if self._security is None:
                log.error("%s", security)
            self._security = security
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            if self._down_since is None:
                self._down_since = time.perf_counter()
                log.warning("no Kafka broker reachable: %s", err.str())
        elif err.fatal():
            if self._fatal is None:
                self._fatal = ProducerFatalError(
                    f"the Kafka producer hit a fatal error: {err.str()} ({err.name()})", kafka_error=err
                )
                log.error("%s", self._fatal)
        else:
            log.debug("Kafka client error: %s", err.str())

    def _on_stats(self, raw: str) -> None:
        """A broker is up again: the cluster is reachable (librdkafka statistics, every second)."""
        if self._down_since is None:
            return
        brokers = json.loads(raw).get("brokers", {})
        if any(b.get("state") == "UP" and b.get("source") != "internal" for b in brokers.values()):
            log.warning("a Kafka broker is reachable again")
            self._down_since = self._security = None

    def _poll_loop(self) -> None:
        """Serve delivery reports while the application is not publishing.

        While it publishes, ``publish`` serves them inline (``poll(0)``); polling from both
        threads at once would only hand the GIL back and forth. 5 ms after the last publish this
        thread takes over, so the report of the last event of a burst waits at most that long
        (the gateway answers each request only after its report).
        """
        producer = self._producer
        assert producer is not None
        while not self._stop.is_set():
            try:
                if time.monotonic() - self._last_publish > 0.005:
                    producer.poll(0.05)  # returns as soon as a report is ready
                    if self._acked_n:  # idle: the acked counter catches up
                        self._report_acked()
                else:
                    self._stop.wait(0.005)
                if self._cluster_down_for() is not None or self._security is not None:  # queued, not sent
                    producer.purge(in_queue=True, in_flight=False, blocking=False)
            except Exception:  # a failing callback must not stop delivery reports for everyone else
                log.exception("delivery report handling failed")

    def cluster_topics(self, timeout: float = 2.0) -> set[str]:
        """The cluster's topic names; :class:`PublishError` if no broker answers within ``timeout``."""
        try:
            return set(self._require().list_topics(timeout=timeout).topics)
        except KafkaException as exc:
            raise PublishError(f"the Kafka cluster did not answer: {exc.args[0].str()}") from exc

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for in-flight events; returns how many are still not acknowledged."""
        remaining = int(self._require().flush(timeout))
        self.sent.publish_metrics()
        self._report_acked()
        return remaining

    def close(self, timeout: float | None = None) -> int:
        """Flush (up to ``timeout``, default ``close_timeout_s``), stop polling, release clients.

        Events still not acknowledged after the timeout are purged, so every future resolves:
        queued ones fail (not written), in-flight ones are indeterminate. Returns how many.
        """
        producer = self._producer
        if producer is None:
            return 0
        try:
            remaining = int(producer.flush(self.settings.close_timeout_s if timeout is None else timeout))
            if remaining:
                producer.purge(in_queue=True, in_flight=True)
                producer.flush(5)  # delivers the purge reports to the futures
        finally:
            self._report_acked()
            self._stop.set()
            if self._poller is not None:
                self._poller.join(timeout=5)
            self._producer = None
            _LIVE.discard(self)
            if self._registry_client is not None:
                self._registry_client.close()
                self._registry_client = None
        return remaining

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require(self) -> Producer:
        if self._producer is None:
            raise EvstreamError("the producer is not started; use `with EventProducer(...)` or call start()")
        return self._producer

    # ------------------------------------------------------------------ publishing

    def encoder(self, topic: str, model: type[Event]) -> Encoder:
        """The Avro encoder for ``model`` on ``topic``, cached; the subject follows the catalog's
        subject strategy (or the model's own; by default ``<topic>-<record name>``)."""
        encoder = self._encoders.get((topic, model))
        if encoder is None:
            if self._codec is None:
                raise EvstreamError("the producer is not started")
            catalog = self._catalog  # a model instance needs no catalog: then the model's strategy
            subject = catalog.subject(model, topic) if catalog is not None else model.subject(topic)
            # The model validated the event and generated the schema: skip fastavro's field-set check.
            try:
                encoder = self._encoders[(topic, model)] = self._codec.encoder(
                    subject, model.avro_schema_dict(), strict=False
                )
            except RegistryUnavailableError as exc:  # bounded by RegistrySettings' timeouts and retries
                PUBLISHED.labels(topic, model.event_type(), "failed").inc()
                raise RegistryUnavailableError(
                    f"{topic}: cannot publish {model.event_type()}, its schema could not be registered"
                    f" ({exc}); nothing was sent",
                    url=exc.url,
                ) from exc
        return encoder

    def publish(
        self,
        event: Event,
        *,
        topic: str | None = None,
        key: str | None = None,
        source: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        traceparent: str | None = None,
        envelope: Envelope | None = None,
        extra_headers: Iterable[tuple[str, bytes]] = (),
        event_id: UUID | None = None,
    ) -> DeliveryFuture:
        """Encode ``event`` and hand it to Kafka; the key is its aggregate id unless given.

        ``event_id`` is a new UUIDv7 unless given (e.g. derived from an idempotency key).

        ``extra_headers`` follow the envelope's (envelope names, ``ce_*`` and ``traceparent``, are
        refused).
        """
        future = self._publish(
            event,
            None,
            topic,
            key,
            source,
            correlation_id,
            causation_id,
            traceparent,
            envelope,
            extra_headers,
            event_id,
        )
        assert future is not None
        return future

    def send(self, event: Event, **options: Any) -> UUID:
        """Publish without a future (fire and forget, as far as the caller is concerned); returns
        the event id. Options as :meth:`publish`.

        Every outcome is still reported: counted in :attr:`sent` (acked, failed, indeterminate)
        and, for a failure, passed to ``on_error(event_id, error)`` given to the producer (else
        logged at ERROR). :meth:`flush` waits for the reports; ``sent.wait()`` too.
        """
        return self._send(event, self.sent, options)

    def _send(self, event: Event, tally: DeliveryTally, options: dict[str, Any]) -> UUID:
        if self._in_transaction:
            raise EvstreamError("inside a transaction, publish() (outcomes are known at commit)")
        get = options.get
        unknown = set(options) - _PUBLISH_OPTIONS
        if unknown:
            raise TypeError(f"unexpected publish option(s): {', '.join(sorted(unknown))}")
        envelope = get("envelope")
        event_id = get("event_id") or (envelope.event_id if envelope is not None else None) or new_event_id()
        tally._expect(1)
        try:
            self._publish(
                event,
                tally,
                get("topic"),
                get("key"),
                get("source"),
                get("correlation_id"),
                get("causation_id"),
                get("traceparent"),
                get("envelope"),
                get("extra_headers", ()),
                event_id,
            )
        except BaseException:
            tally._expect(-1)  # refused before it was queued: the caller has the error
            raise
        return event_id

    def _publish(
        self,
        event: Event,
        tally: DeliveryTally | None,
        topic: str | None,
        key: str | None,
        source: str | None,
        correlation_id: str | None,
        causation_id: str | None,
        traceparent: str | None,
        envelope: Envelope | None,
        extra_headers: Iterable[tuple[str, bytes]],
        event_id: UUID | None,
    ) -> DeliveryFuture | None:
        """publish()'s body; with ``tally`` no future is made and the tally gets the report."""
        producer = self._require()
        model = type(event)
        target = topic or model.topic
        event_type = model.event_type()
        self._check_usable(target, event_type)
        if envelope is not None:
            if envelope.event_type != event_type:
                raise EnvelopeError(f"envelope says {envelope.event_type!r} but the event is {event_type!r}")
            event_id, headers = envelope.event_id, envelope.to_headers()
        else:
            event_id = event_id or new_event_id()
            cause = current_cause()
            if cause is not None:  # published while handling an event: continue its story
                correlation_id = correlation_id or cause.correlation_id
                causation_id = causation_id or cause.causation_id
                traceparent = traceparent or cause.traceparent
            headers = envelope_headers(
                event_id,
                event_type,
                None,
                source or self.settings.source,
                correlation_id,
                causation_id,
                check_traceparent(traceparent),
            )
        if extra_headers:
            extra = list(extra_headers)
            if any(name.startswith("ce_") or name == "traceparent" for name, _ in extra):
                raise EnvelopeError("extra headers may not set envelope headers (ce_*, traceparent)")
            headers = [*headers, *extra]
        value = self.encoder(target, model)(event.model_dump())
        future, callback = self._reporting(tally, event_id, event_type)
        if self._down_since is not None and self._cluster_down_for() is not None:  # went down meanwhile
            self._check_usable(target, event_type)
        record_key = key if key is not None else event.aggregate_id()
        while True:
            try:
                producer.produce(target, value=value, key=record_key, headers=headers, on_delivery=callback)
                producer.poll(0)  # serve ready delivery reports here: cheaper than a GIL hand-off
                self._last_publish = time.monotonic()
                break
            except BufferError:  # the local queue is full: let deliveries drain, then retry
                producer.poll(0.05)
            except KafkaException as exc:
                PUBLISHED.labels(target, event_type, "failed").inc()
                raise PublishError(f"{target}: cannot produce event {event_id}: {exc}") from exc
        if future is None:
            return None
        if self._in_transaction:  # resolve only when the transaction's outcome is known
            held = DeliveryFuture(self._cond)
            self._txn_futures.append((future, held, target, event_id))
            return held
        return future

    def _check_usable(self, topic: str, event_type: str) -> None:
        """Refuse at once (nothing queued) while the instance is fatal or the cluster unreachable."""
        security = self._security
        refusal = (
            None if security is None else publish_refusal(security, f"{topic}: {event_type}", topic=topic)
        )
        if refusal is not None:
            PUBLISHED.labels(topic, event_type, "failed").inc()
            raise refusal
        if self._fatal is not None and self.settings.transactional_id is None:
            PUBLISHED.labels(topic, event_type, "failed").inc()
            raise self._fatal
        down = self._cluster_down_for()
        if down is not None:
            PUBLISHED.labels(topic, event_type, "failed").inc()
            raise ClusterUnavailableError(
                f"{topic}: no Kafka broker reachable for {down:.0f}s: {event_type} not queued, not written",
                topic=topic,
                down_for_s=down,
            )

    def publish_dict(self, event_type: str, data: Mapping[str, Any], **options: Any) -> DeliveryFuture:
        """Validate ``data`` as ``event_type`` from the catalog, then publish it."""
        try:
            event = self.catalog.validate(event_type, data)
        except EvstreamError:
            PUBLISHED.labels(options.get("topic") or "", event_type, "invalid").inc()
            raise
        return self.publish(event, **options)

    def publish_many(self, events: Iterable[Event], **options: Any) -> list[DeliveryFuture]:
        """Publish each event (batched by librdkafka); one future per event, in order."""
        return [self.publish(event, **options) for event in events]

    def publish_bulk(self, events: Iterable[Event], **options: Any) -> DeliveryTally:
        """Publish each event without a future per event; the returned :class:`DeliveryTally`
        counts the outcomes (acked, failed, indeterminate), keeps each failure's event id and
        error, and ``wait(timeout)`` returns once every event of the bulk is reported.

        ``event_id`` / ``envelope`` options are per event, so not accepted here. An event refused
        before it was queued raises (the events before it are queued and tallied).
        """
        if "event_id" in options or "envelope" in options:
            raise TypeError("publish_bulk() takes no event_id or envelope (they are per event)")
        tally = DeliveryTally(self, on_error=None)
        for event in events:
            self._send(event, tally, options)
        self._require().poll(0)
        return tally

    def _delivered(
        self,
        future: DeliveryFuture,
        event_id: UUID,
        event_type: str,
        started: float,
        err: KafkaError | None,
        msg: Message,
    ) -> None:
        topic = msg.topic() or ""
        if err is None:
            # The acked counter gets its increments per batch: every 1,000 deliveries, whenever
            # the poll thread is idle, on flush and on close (a Prometheus inc per event costs more).
            with self._acked_lock:
                key = (topic, event_type)
                counts = self._acked_counts
                counts[key] = counts.get(key, 0) + 1
                self._acked_n = n = self._acked_n + 1
            self._metrics(topic, event_type)[1].observe(time.perf_counter() - started)
            if n >= 1000:
                self._report_acked()
            future._resolve(
                Delivery(topic, msg.partition() or 0, msg.offset() or 0, event_id, event_type), None
            )
            return
        error = self._delivery_error(err, topic, event_id, started)
        outcome = "indeterminate" if isinstance(error, DeliveryIndeterminateError) else "failed"
        PUBLISHED.labels(topic, event_type, outcome).inc()
        future._resolve(None, error)

    def _report_acked(self) -> None:
        """Add the acknowledged events not counted yet to ``evstream_events_published_total``."""
        with self._acked_lock:
            counts, self._acked_counts, self._acked_n = self._acked_counts, {}, 0
        for (topic, event_type), count in counts.items():
            self._metrics(topic, event_type)[0].inc(count)

    def _reporting(
        self, tally: DeliveryTally | None, event_id: UUID, event_type: str
    ) -> tuple[DeliveryFuture | None, Callable[[KafkaError | None, Message], None]]:
        """The future (None when a tally takes the report) and the delivery callback of one event."""
        if tally is not None:
            return None, tally._callback(event_type, event_id)
        future = DeliveryFuture(self._cond)
        return future, partial(self._delivered, future, event_id, event_type, time.perf_counter())

    def _delivery_error(self, err: KafkaError, topic: str, event_id: UUID, started: float) -> PublishError:
        """The typed error of a failed delivery: not written, or indeterminate (maybe written)."""
        error = classify(err, topic=topic, event_id=event_id)
        down = self._down_since
        security = self._security
        refused = (
            None
            if security is None
            else publish_refusal(
                security, f"{topic}: event {event_id}", topic=topic, event_id=event_id, kafka_error=err
            )
        )
        if err.code() == KafkaError._PURGE_QUEUE and refused is not None:
            error = refused  # never authenticated to any broker: it cannot have been sent
        elif err.code() == KafkaError._PURGE_QUEUE and down is not None:
            if started >= down:  # queued while no broker was reachable: it cannot have been sent
                error = ClusterUnavailableError(
                    f"{topic}: event {event_id}: {err.str()} ({err.name()}): no Kafka broker reachable"
                    " since before it was queued, so it was never sent: not written",
                    topic=topic,
                    event_id=event_id,
                    kafka_error=err,
                    down_for_s=time.perf_counter() - down,
                )
            else:  # queued before the outage: it may have been sent and queued again for a retry
                error = DeliveryIndeterminateError(
                    f"{topic}: event {event_id}: {err.str()} ({err.name()}): queued before the cluster"
                    " became unreachable, it may have been sent: it may or may not have been written",
                    topic=topic,
                    event_id=event_id,
                    kafka_error=err,
                )
        return error

    def _tallied(
        self, tally: DeliveryTally, event_type: str, event_id: UUID, err: KafkaError | None, msg: Message
    ) -> None:
        """The delivery callback of an event published without a future: counted in ``tally``."""
        topic = msg.topic() or ""
        if err is None:
            tally._acked(topic, event_type)
            return
        error = self._delivery_error(err, topic, event_id, time.perf_counter() - (msg.latency() or 0.0))
        indeterminate = isinstance(error, DeliveryIndeterminateError)
        PUBLISHED.labels(topic, event_type, "indeterminate" if indeterminate else "failed").inc()
        tally._failed(event_id, error, indeterminate)

    def _metrics(self, topic: str, event_type: str) -> tuple[Any, Any]:
        """Labelled metric children, cached: ``labels()`` is too slow to call per event."""
        found = self._metric_children.get((topic, event_type))
        if found is None:
            found = self._metric_children[(topic, event_type)] = (
                PUBLISHED.labels(topic, event_type, "acked"),
                PUBLISH_LATENCY.labels(topic),
            )
        return found

    # ------------------------------------------------------------------ transactions

    @contextlib.contextmanager
    def transaction(self, timeout: float = 30.0) -> Iterator[Self]:
        """Publish atomically across topics: commit on success, abort if the block raises.

        Needs ``transactional_id`` in the settings. Read-committed consumers see all of the
        block's events or none of them. A fatal error of librdkafka's instance (``_FENCED``,
        ``INVALID_TXN_STATE``...) raises :class:`ProducerFatalError`; the block's futures fail
        (aborted: not visible) or, when the commit itself failed fatally, are indeterminate; the
        instance is replaced (``recovered``) where the error allows it, so the next transaction works.
        """
        producer = self._require()
        if self.settings.transactional_id is None:
            raise EvstreamError("transactions need ProducerSettings(transactional_id=...)")
        if self._in_transaction:
            raise EvstreamError("transactions do not nest")
        if self._fatal is not None:  # a fatal error seen outside a transaction call: recover first
            self._raise_fatal(self._fatal.kafka_error, "before the transaction began", None)
        try:
            producer.begin_transaction()
        except KafkaException as exc:
            if exc.args[0].fatal():
                self._raise_fatal(exc.args[0], "at begin_transaction", exc)
            raise PublishError(f"cannot begin a transaction: {exc}") from exc
        self._in_transaction = True
        self._txn_futures = []
        try:
            yield self
        except BaseException as exc:
            self._abort(producer, timeout, f"the block failed ({exc!r})", exc)
            self._settle_transaction(
                DeliveryFailedError("the transaction was aborted: not visible to readers")
            )
            raise
        else:
            try:
                _commit(producer, timeout)
            except KafkaException as exc:
                err = exc.args[0]
                if err.fatal():  # no abort possible; the new instance's init aborts it if still open
                    fenced = err.code() == KafkaError._FENCED  # fencing aborted the open transaction
                    self._settle_transaction(
                        DeliveryFailedError(
                            f"fenced before the commit: not written ({err.str()})", kafka_error=err
                        )
                        if fenced
                        else DeliveryIndeterminateError(
                            f"commit failed with a fatal error ({err.str()}): it may or may not have been"
                            " committed",
                            kafka_error=err,
                        )
                    )
                    self._raise_fatal(err, "at commit_transaction", exc)
                self._abort(producer, timeout, f"commit failed ({exc})", exc)
                self._settle_transaction(
                    DeliveryFailedError(f"commit failed and was aborted: {exc}", kafka_error=err)
                )
                raise PublishError(f"transaction commit failed and was aborted: {exc}") from exc
            self._settle_transaction(None)
        finally:
            self._in_transaction = False

    def _abort(self, producer: Producer, timeout: float, why: str, cause: BaseException) -> None:
        """Abort the open transaction; if even that fails its outcome is unknown, and that is raised.

        A fatal error at abort (librdkafka's INVALID_TXN_STATE bug, _FENCED) means the transaction
        was never committed: its events fail and :class:`ProducerFatalError` is raised.

        The sends are settled first: an abort while the transaction's produce requests are still
        in flight made librdkafka fail with the fatal INVALID_TXN_STATE (confluentinc/librdkafka
        #4849) after every coordinator failover in tests/reliability/test_transaction_faults.py
        (6 of 6 aborts); with the flush, 0 of 11."""
        deadline = time.monotonic() + timeout
        try:
            producer.flush(timeout)
            producer.abort_transaction(max(1.0, deadline - time.monotonic()))
        except KafkaException as abort_exc:
            err = abort_exc.args[0]
            if err.fatal():
                self._settle_transaction(
                    DeliveryFailedError(
                        f"{why}; the abort hit a fatal error ({err.str()}): not written", kafka_error=err
                    )
                )
                self._raise_fatal(err, f"aborting after {why}", cause)
            unknown = DeliveryIndeterminateError(f"{why} and abort failed ({abort_exc})", kafka_error=err)
            self._settle_transaction(unknown)
            raise unknown from cause

    def _raise_fatal(self, err: KafkaError | None, where: str, cause: BaseException | None) -> NoReturn:
        """Raise :class:`ProducerFatalError` for ``err``, replacing the instance first if allowed."""
        event_ids = tuple(event_id for _, _, _, event_id in self._txn_futures)
        fenced = err is not None and err.code() == KafkaError._FENCED
        recovered = False
        detail = f"{err.str()} ({err.name()})" if err is not None else "unknown"
        if not fenced or self.settings.recover_fenced:
            try:
                self._recreate()
                recovered = True
            except KafkaException as exc:
                detail += f"; a new instance could not init transactions either: {exc.args[0].str()}"
        error = ProducerFatalError(
            f"the transactional producer hit a fatal error {where}: {detail}; "
            + ("replaced by a new instance (the old one is fenced)" if recovered else "it is unusable"),
            kafka_error=err,
            recovered=recovered,
            event_ids=event_ids,
        )
        self._fatal = None if recovered else error
        log.error("%s", error)
        raise error from cause

    def _recreate(self) -> None:
        """Replace the fatal instance: a new one with the same transactional.id, its transactions
        initialised (which fences the old one and aborts what it left open)."""
        old = self._producer
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
        if old is not None:
            with contextlib.suppress(KafkaException):
                old.purge(in_queue=True, in_flight=True, blocking=False)
                old.poll(0)  # resolves the old instance's outstanding delivery reports
        producer = Producer(self._conf)
        producer.init_transactions(min(30.0, self.settings.delivery_timeout_ms / 1000))
        self.recoveries += 1
        self._run(producer)

    def _settle_transaction(self, error: DeliveryFailedError | DeliveryIndeterminateError | None) -> None:
        """Resolve the futures handed out inside the transaction: committed deliveries, or ``error``
        stated for each of its events."""
        pending, self._txn_futures = self._txn_futures, []
        for inner, held, topic, event_id in pending:
            if error is not None:
                held._resolve(None, error.for_event(topic, event_id))
                continue
            try:
                held._resolve(inner.result(timeout=30), None)
            except PublishError as exc:
                held._resolve(None, exc)


class AsyncEventProducer:
    """The asyncio face of :class:`EventProducer`: ``await publish(...)`` returns the :class:`Delivery`."""

    def __init__(self, **options: Any) -> None:
        self.sync = EventProducer(**options)

    async def start(self) -> Self:
        import asyncio  # noqa: PLC0415 - only the async face needs it

        await asyncio.to_thread(self.sync.start)
        return self

    async def publish(self, event: Event, **options: Any) -> Delivery:
        return await self.sync.publish(event, **options)

    async def publish_dict(self, event_type: str, data: Mapping[str, Any], **options: Any) -> Delivery:
        return await self.sync.publish_dict(event_type, data, **options)

    async def publish_many(self, events: Iterable[Event], **options: Any) -> list[Delivery]:
        futures = self.sync.publish_many(events, **options)
        return [await future for future in futures]

    async def close(self, timeout: float | None = None) -> int:
        import asyncio  # noqa: PLC0415

        return await asyncio.to_thread(self.sync.close, timeout)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
