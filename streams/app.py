"""The stream-processing API: an app, typed event topics, handlers, typed tables, windows, joins.

evstream owns the engine (:mod:`evstream.streams.engine`, on confluent-kafka); this module is
what a user writes a processor with, without touching clients, codecs or headers::

    app = App("orders-app")                      # connection, codec, store... from the environment
    orders = app.events_topic("orders")          # Avro via the registry, typed by the catalog
    totals = app.table("totals", Totals)         # a pydantic model per key

    @app.on(orders, OrderPlaced, updates=[totals])
    async def count(order: OrderPlaced, received: Received) -> None:   # or a plain ``def``
        totals.update(order.customer_id, lambda t: t.add(order))

Guarantees (``EVSTREAM_STREAMS_PROCESSING_GUARANTEE``):

- ``at_least_once`` (default): every update of a table is applied once per source offset (see
  :mod:`evstream.streams.state.records`), derived events are at least once with deterministic
  ids (derived from the cause's id and the publish's position), so a consumer's dedupe drops a
  re-emit. At a commit, derived events are acknowledged first, then the tables' changelogs, then
  the source offsets: a state never claims an event whose derived events could be lost.
- ``exactly_once``: consumed offsets, changelog writes, derived events, forwards and dead letters
  of a commit interval are one Kafka transaction (KIP-447: ``send_offsets_to_transaction`` with
  the consumer's group metadata, so a worker that lost its partitions is fenced by the group
  generation). An abort drops the interval's state and re-reads its records. ``read_committed``
  consumers see every derived event exactly once; ``read_uncommitted`` ones may also see events
  of aborted transactions (and so duplicates), as with any transactional producer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel

from evstream.errors import ConfigError, CopartitioningError
from evstream.schemas import AvroCodec, Catalog, Event
from evstream.settings import KafkaSettings, RegistrySettings
from evstream.streams.context import Published, Received, Sent
from evstream.streams.engine.processor import Handler, Processor, Route, is_async
from evstream.streams.joins import Wait, Waiting
from evstream.streams.settings import StreamsSettings
from evstream.streams.state.tables import Table, TableState
from evstream.streams.topics import EventTopic, StreamCodec
from evstream.streams.windows import OnClose, SessionTable, WindowedTable

__all__ = ["App"]

M = TypeVar("M", bound=BaseModel)


class App:
    """A stream processor: topics, tables and handlers, run by ``evstream worker module:app``.

    ``app_id`` names the consumer group and prefixes the app's topics; ``EVSTREAM_STREAMS_APP_ID``
    overrides it, so one module runs as several deployments. Connection, registry, store and
    guarantee come from the environment (``EVSTREAM_BOOTSTRAP_SERVERS``, ``EVSTREAM_REGISTRY_URL``,
    ``EVSTREAM_STREAMS_*``) unless given; the catalog is the project's (``EVSTREAM_CATALOG`` /
    ``[tool.evstream]``). No I/O here: the worker connects.
    """

    def __init__(
        self,
        app_id: str | None = None,
        *,
        catalog: Catalog | None = None,
        settings: StreamsSettings | None = None,
        kafka: KafkaSettings | None = None,
        registry: RegistrySettings | None = None,
        source: str | None = None,
    ) -> None:
        self.settings = settings or StreamsSettings()
        # the environment (EVSTREAM_STREAMS_APP_ID) names a deployment; the code's id is the default
        env_id = self.settings.app_id if "app_id" in self.settings.model_fields_set else None
        self.app_id = env_id or app_id or self.settings.app_id
        self.kafka = kafka or KafkaSettings()
        self.registry = registry or RegistrySettings()
        self._catalog = catalog
        self._codec: AvroCodec | None = None
        self.source = source or self.app_id
        self.processor = Processor(self.app_id, self.source)
        self.topics: dict[str, EventTopic] = {}

    # -- declarations -------------------------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            from evstream.settings import project_catalog  # noqa: PLC0415 - resolved on first use

            self._catalog = project_catalog()
        return self._catalog

    def use_codec(self, codec: AvroCodec) -> None:
        """Read and write with ``codec`` (the testing harness gives one over an in-memory store)."""
        self._codec = codec

    def _avro(self) -> AvroCodec:
        if self._codec is None:
            from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: PLC0415

            from evstream.schemas import RegistrySchemaStore  # noqa: PLC0415

            self._codec = AvroCodec(RegistrySchemaStore(SchemaRegistryClient(self.registry.client_config())))
        return self._codec

    @property
    def tables(self) -> Sequence[TableState[Any]]:
        return self.processor.tables

    @property
    def routes(self) -> Sequence[Route]:
        return self.processor.routes

    def events_topic(self, name: str, *, partitions: int | None = None, internal: bool = False) -> EventTopic:
        """A topic of catalog events. ``internal=True``: the app's own (created by the worker with
        ``partitions``, default ``EVSTREAM_STREAMS_PARTITIONS``), e.g. a re-keyed stream."""
        if internal and partitions is None:
            partitions = self.settings.partitions
        codec = StreamCodec(name, resolve=lambda: (self._avro(), self.catalog))  # registry on first use
        found = self.topics[name] = EventTopic(name, partitions, internal=internal, codec=codec)
        return found

    def _changelog(self, table: str) -> str:
        return f"{self.app_id}-{table}-changelog"

    def _add(self, table: TableState[Any]) -> None:
        if any(t.name == table.name for t in self.processor.tables):
            raise ConfigError(f"a table named {table.name!r} is declared twice")
        self.processor.tables.append(table)

    def table(self, name: str, model: type[M], *, partitions: int | None = None) -> Table[M]:
        """Per-key state typed by ``model`` (its defaults are a new key's value)."""
        found = Table(name, model, partitions or self.settings.partitions, self._changelog(name))
        self._add(found)
        return found

    def windowed_table(
        self,
        name: str,
        model: type[M],
        *,
        size: timedelta,
        hop: timedelta | None = None,
        grace: timedelta = timedelta(0),
        expires: timedelta | None = None,
        on_close: OnClose | None = None,
        late_topic: EventTopic | None = None,
        partitions: int | None = None,
    ) -> WindowedTable[M]:
        """Tumbling (or, with ``hop``, hopping) windows of event time; see :class:`WindowedTable`."""
        found = WindowedTable(
            name,
            model,
            partitions or self.settings.partitions,
            self._changelog(name),
            size=size,
            hop=hop,
            grace=grace,
            expires=expires if expires is not None else size + grace,
            on_close=on_close,
            late_topic=late_topic,
            forward=self.forward,
        )
        self._add(found)
        return found

    def session_table(
        self,
        name: str,
        model: type[M],
        *,
        gap: timedelta,
        grace: timedelta = timedelta(0),
        expires: timedelta | None = None,
        merge: Callable[[M, M], M] | None = None,
        on_close: OnClose | None = None,
        late_topic: EventTopic | None = None,
        partitions: int | None = None,
    ) -> SessionTable[M]:
        """Session windows of event time closed by ``gap`` of inactivity; see :class:`SessionTable`."""
        found = SessionTable(
            name,
            model,
            partitions or self.settings.partitions,
            self._changelog(name),
            gap=gap,
            grace=grace,
            expires=expires if expires is not None else grace,
            merge=merge,
            on_close=on_close,
            late_topic=late_topic,
            forward=self.forward,
        )
        self._add(found)
        return found

    def on(
        self,
        topic: EventTopic,
        *types: type[Event],
        lookups: Iterable[TableState[Any]] = (),
        updates: Iterable[TableState[Any]] = (),
        wait: Wait | None = None,
    ) -> Callable[[Handler], Handler]:
        """Call the decorated ``handler(event, received)`` (``async def`` or plain) for each event
        of ``topic`` (of ``types`` only, when given; others pass by). ``lookups``: tables it
        joins with; ``updates``: tables it writes — both checked for co-partitioning at start,
        and their partitions are owned with the topic's; ``wait``: how its ``lookup(key,
        missing="wait")`` calls hold events for missing rows (:class:`Wait`)."""

        def register(handler: Handler) -> Handler:
            name = getattr(handler, "__name__", type(handler).__name__)
            route = Route(topic, types, handler, tuple(lookups), tuple(updates), is_async(handler), name=name)
            if wait is not None:
                tables = [t for t in route.lookups if isinstance(t, Table)]
                if not tables:
                    raise ConfigError(f"{name}: wait= needs the tables it waits for in lookups=")
                dead_letter = (
                    self.events_topic(
                        f"{self.app_id}-{name}-unjoined", partitions=tables[0].partitions, internal=True
                    )
                    if wait.then == "dead_letter"
                    else None
                )
                route.waiting = Waiting(
                    self.processor,
                    route,
                    wait,
                    partitions=tables[0].partitions,
                    changelog=self._changelog(f"{name}-waiting"),
                    dead_letter=dead_letter,
                )
                for table in tables:
                    table.waiters.append(route.waiting)
                self._add(route.waiting.state)
            self.processor.add_route(route)
            return handler

        return register

    def group_by(
        self,
        topic: EventTopic,
        *types: type[Event],
        key: Callable[[Any], str],
        name: str,
        partitions: int | None = None,
    ) -> EventTopic:
        """Re-key ``topic`` (events of ``types``) by ``key(event)``: returns the internal topic
        ``<app_id>-<name>`` (``partitions``, default ``EVSTREAM_STREAMS_PARTITIONS``) that a
        handler (``on(returned, ...)``) reads, and registers the handler that forwards each event
        there (:meth:`forward`: bytes, envelope and origin kept)."""
        target = self.events_topic(f"{self.app_id}-{name}", partitions=partitions, internal=True)

        def rekey(event: Any, received: Received) -> None:
            self.forward(received, target, key=key(event))

        rekey.__name__ = f"group_by_{name}"
        self.on(topic, *types)(rekey)
        return target

    # -- effects ------------------------------------------------------------------------------------

    def publish(
        self, event: Event, *, cause: Received, topic: EventTopic | None = None, key: str | None = None
    ) -> Published:
        """Publish a derived event; its envelope continues the cause's (correlation id, causation
        id = the cause's event id, traceparent a child span of the cause's). Its id is derived from
        the cause's id and the publish's position in the handler, so an event processed again
        re-emits the same ids (a consumer's dedupe store drops them); returns the id (awaiting
        it is optional)."""
        return self.processor.publish(event, cause=cause, topic=self._topic_of(event, topic), key=key)

    def forward(self, received: Received, topic: EventTopic, *, key: str | None = None) -> Sent[None]:
        """Send the received record (its bytes, envelope and origin) to ``topic``, re-keyed by
        ``key``: the usual way to re-partition a stream (``route(order) -> by customer``)."""
        return self.processor.forward(received, topic, key=key)

    def _topic_of(self, event: Event, topic: EventTopic | None) -> EventTopic:
        if topic is not None:
            return topic
        name = type(event).topic
        found = self.topics.get(name or "")
        if found is None:
            raise ConfigError(f"{type(event).__name__}: declare its topic with app.events_topic({name!r})")
        return found

    # -- start-up checks ----------------------------------------------------------------------------

    def check_copartitioning(self, partitions_of: Callable[[str], int | None]) -> None:
        """Every stream joined with (or writing) a table has the table's partition count;
        :class:`CopartitioningError` names the topics otherwise. ``partitions_of`` reads a topic's
        count (None: not created yet, then the declared count is used)."""
        for route in self.processor.routes:
            tables = route.tables()
            if not tables:
                continue
            count = partitions_of(route.topic.name) or route.topic.partitions
            for table in tables:
                if count is not None and count != table.partitions:
                    found = {route.topic.name: count, table.changelog: table.partitions}
                    raise CopartitioningError(
                        f"{route.name}: {route.topic.name} has {count} partitions but table "
                        f"{table.name!r} has {table.partitions}: a key's row would live on another "
                        "partition than its events. Re-key the stream (app.group_by or app.forward "
                        "to an internal topic with the table's partitions) or give the table the "
                        "topic's count.",
                        topics=found,
                    )

    def describe(self) -> Sequence[tuple[str, tuple[str, ...]]]:
        """(topic, event types) of each handler, for diagnostics."""
        return [(r.topic.name, tuple(t.__name__ for t in r.types)) for r in self.processor.routes]
