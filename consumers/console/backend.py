"""What the console shows, read from the cluster and the registry; every read bounded.

One :class:`Backend` per console process: one AdminClient, one registry client and codec, one
reading consumer (assigned per request, never committing; a lock serialises its use). Records
are read with ``assign`` at computed offsets (``offsets_for_times`` for times), at most
``max_scan_records`` records and ``max_scan_seconds`` per request; the answer says how many
records were scanned and whether a bound cut the read short.
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import json
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, ResourceType
from confluent_kafka.schema_registry import SchemaRegistryClient

from evstream.consumers.failures import header_pairs
from evstream.consumers.groups import GroupDescription, describe_group, list_groups
from evstream.consumers.replay.cluster import Cluster
from evstream.errors import EvstreamError
from evstream.schemas import AvroCodec, Catalog, Envelope, EventReader, RecordCoordinates, RegistrySchemaStore
from evstream.schemas.ids import derived_event_id
from evstream.settings import KafkaSettings, RegistrySettings, librdkafka_config
from evstream.topics.admin import describe_topics
from evstream.topics.plan import TopicChange, plan_changes
from evstream.topics.spec import load_topics_file

__all__ = ["Backend", "BrowseQuery", "BrowseResult", "LagSampler", "RecordView", "config_source"]

_TIMEOUT = 10.0
Key = tuple[str, int]

# How the reading consumer fetches: a page is 50 records, not librdkafka's throughput defaults.
# A read that stops early (a page by time fills from one partition) leaves whole fetches queued
# on the other partitions; librdkafka then backs the broker's fetcher off for
# fetch.queue.backoff.ms ("Fetch backoff for 1000ms: Local: Queue full", default 1000 ms), and the
# next request's assign waited out that second (bench/RESULTS.md, web console). So: a short queue
# backoff, and a prefetch sized for pages (default 100,000 messages and 1 MiB per partition).
_READER_FETCH: dict[str, int] = {
    "fetch.wait.max.ms": 50,
    "fetch.queue.backoff.ms": 10,
    "queued.min.messages": 1000,
    "max.partition.fetch.bytes": 256 * 1024,
}


@dataclass(frozen=True)
class BrowseQuery:
    """Which records to show. Without a start (offset, time or event id) the newest are shown."""

    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None  # inclusive
    from_time: datetime | None = None
    to_time: datetime | None = None  # inclusive
    event_type: str | None = None
    key: str | None = None
    event_id: str | None = None
    correlation_id: str | None = None
    limit: int = 50

    @property
    def filtered(self) -> bool:
        return any((self.event_type, self.key, self.event_id, self.correlation_id))


@dataclass
class RecordView:
    topic: str
    partition: int
    offset: int
    timestamp: datetime | None
    key: str | None
    headers: list[tuple[str, str]]
    event_type: str
    event_id: str
    correlation_id: str | None
    raw: bytes | None = None
    envelope: dict[str, Any] = field(default_factory=dict)
    data: Any = None
    schema_id: int | None = None
    error: str | None = None
    foreign: bool = False


@dataclass
class BrowseResult:
    records: list[RecordView]
    scanned: int
    cut: str | None  # which bound stopped the read early, if one did
    positions: dict[int, int]  # per partition, the offset after the last record scanned
    elapsed_ms: float


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class Backend:
    """The console's connection to Kafka and the registry. Constructing it does no I/O."""

    def __init__(
        self,
        kafka: KafkaSettings,
        registry: RegistrySettings,
        catalog: Catalog | None,
        *,
        topics_file: Path | None = None,
        max_scan_records: int = 20_000,
        max_scan_seconds: float = 2.0,
    ) -> None:
        self.kafka = kafka
        self.registry_settings = registry
        self.conf = librdkafka_config(kafka)
        self.admin = AdminClient(self.conf)
        self.cluster = Cluster(self.admin)
        self.registry = SchemaRegistryClient(registry.client_config())
        self.codec = AvroCodec(RegistrySchemaStore(self.registry))
        self.catalog = catalog
        self.reader = EventReader(self.codec, catalog) if catalog is not None else None
        self.topics_file = topics_file
        self.max_scan_records = max_scan_records
        self.max_scan_seconds = max_scan_seconds
        self._consumer: Consumer | None = None
        self._lock = threading.Lock()
        self._versions: dict[int, list[tuple[str, int]]] = {}

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
        self.registry.close()

    # -- cluster ------------------------------------------------------------------------------
    def metadata(self) -> Any:
        try:
            return self.admin.list_topics(timeout=_TIMEOUT)
        except KafkaException as exc:
            raise EvstreamError(f"cannot read cluster metadata: {exc}") from exc

    def overview(self) -> dict[str, Any]:
        meta = self.metadata()
        topics = {n: t for n, t in meta.topics.items() if not n.startswith("__")}
        under = [
            f"{name}[{p.id}]"
            for name, t in meta.topics.items()
            for p in t.partitions.values()
            if len(p.isrs) < len(p.replicas)
        ]
        try:
            subjects: int | str = len(self.registry.get_subjects())
            registry_ok = True
        except Exception as exc:  # the registry's errors are many; any of them means "not reachable"
            subjects, registry_ok = f"{type(exc).__name__}", False
        try:
            groups: int | str = len(list_groups(self.admin))
        except EvstreamError as exc:
            groups = str(exc)
        return {
            "cluster_id": meta.cluster_id,
            "brokers": sorted((b.id, f"{b.host}:{b.port}") for b in meta.brokers.values()),
            "controller": meta.controller_id,
            "under_replicated": under,
            "topics": len(topics),
            "partitions": sum(len(t.partitions) for t in topics.values()),
            "groups": groups,
            "registry_ok": registry_ok,
            "registry_url": self.registry_settings.url,
            "subjects": subjects,
            "stack": self.stack_status(),
        }

    def stack_status(self) -> list[dict[str, Any]] | None:
        """The local stack's processes when the console talks to it, else None."""
        from evstream.stack.manager import LocalStack  # noqa: PLC0415 - only for the local stack

        stack = LocalStack()
        try:
            state = stack.state()
        except EvstreamError:
            return None
        if state.bootstrap_servers.split(",")[0] not in self.kafka.bootstrap_servers:
            return None
        try:
            rows = stack.status()
        except EvstreamError:
            return None
        return [{"name": r.name, "pid": r.pid, "alive": r.alive, "endpoint": r.endpoint} for r in rows]

    def topics(self) -> list[dict[str, Any]]:
        meta = self.metadata()
        names = sorted(n for n in meta.topics if not n.startswith("__"))
        keys = [(n, p) for n in names for p in meta.topics[n].partitions]
        ends = self.cluster.latest(keys) if keys else {}
        rows = []
        for name in names:
            t = meta.topics[name]
            parts = t.partitions.values()
            rows.append(
                {
                    "name": name,
                    "partitions": len(t.partitions),
                    "replication": max((len(p.replicas) for p in parts), default=0),
                    "records": sum(ends.get((name, p), 0) for p in t.partitions),
                    "under_replicated": sum(1 for p in parts if len(p.isrs) < len(p.replicas)),
                }
            )
        return rows

    def partitions(self, topic: str) -> list[int]:
        return self.cluster.partitions(topic)

    def topic(self, name: str) -> dict[str, Any]:
        meta = self.metadata().topics.get(name)
        if meta is None or meta.error is not None:
            raise EvstreamError(f"no topic {name!r}")
        keys = [(name, p) for p in sorted(meta.partitions)]
        earliest, end = self.cluster.earliest(keys), self.cluster.latest(keys)
        now_ms = int(time.time() * 1000)
        # records per minute over the last 5 minutes, from the offsets at those times (exact)
        marks = [self.cluster.for_time(keys, now_ms - m * 60_000) for m in range(5, 0, -1)] + [end]
        per_minute = [sum(b[k] - a[k] for k in keys) for a, b in itertools.pairwise(marks)]
        resource = ConfigResource(ResourceType.TOPIC, name)
        try:
            described = self.admin.describe_configs([resource], request_timeout=_TIMEOUT)[resource].result(
                timeout=_TIMEOUT
            )
        except KafkaException as exc:
            raise EvstreamError(f"cannot describe configs of {name!r}: {exc}") from exc
        configs = [
            {
                "name": c.name,
                "value": "(hidden)" if c.is_sensitive else c.value,
                "source": config_source(c.source),
                "default": bool(c.is_default),
            }
            for c in sorted(described.values(), key=lambda c: c.name)
        ]
        return {
            "name": name,
            "partitions": [
                {
                    "partition": p.id,
                    "leader": p.leader,
                    "replicas": list(p.replicas),
                    "isr": list(p.isrs),
                    "earliest": earliest[(name, p.id)],
                    "end": end[(name, p.id)],
                }
                for p in sorted(meta.partitions.values(), key=lambda p: p.id)
            ],
            "configs": configs,
            "per_minute": per_minute,
            "plan": self.plan_for(name),
        }

    def plan_for(self, name: str) -> TopicChange | str | None:
        """The topics-as-code diff for ``name``: a change, a reason it cannot be shown, or None."""
        if self.topics_file is None:
            return "no topics file (EVSTREAM_CONSOLE_TOPICS_FILE or --topics-file)"
        try:
            specs = [s for s in load_topics_file(self.topics_file).topics if s.name == name]
            if not specs:
                return f"not declared in {self.topics_file}"
            return plan_changes(specs, describe_topics(self.admin, [name]))[0]
        except EvstreamError as exc:
            return str(exc)

    # -- records ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _reading(self) -> Iterator[Consumer]:
        with self._lock:
            if self._consumer is None:
                self._consumer = Consumer(
                    {
                        **self.conf,
                        "group.id": f"evstream-console-{uuid.uuid4().hex[:8]}",
                        "enable.auto.commit": False,
                        "enable.auto.offset.store": False,
                        "auto.offset.reset": "earliest",
                        **_READER_FETCH,
                        "isolation.level": "read_committed",
                    }
                )
            try:
                yield self._consumer
            finally:
                with contextlib.suppress(KafkaException):
                    self._consumer.unassign()

    def _starts(
        self, topic: str, keys: list[Key], query: BrowseQuery, earliest: dict[Key, int], end: dict[Key, int]
    ) -> tuple[dict[Key, int], dict[Key, int], bool]:
        """Per partition the first and the stop offset, and whether to read forward from the start."""
        stops = dict(end)
        if query.to_offset is not None:
            stops = {k: min(v, query.to_offset + 1) for k, v in stops.items()}
        if query.to_time is not None:
            after = self.cluster.for_time(keys, int(query.to_time.timestamp() * 1000) + 1)
            stops = {k: min(v, after[k]) for k, v in stops.items()}
        if query.from_offset is not None:
            return {k: max(earliest[k], query.from_offset) for k in keys}, stops, True
        if query.from_time is not None:
            return self.cluster.for_time(keys, int(query.from_time.timestamp() * 1000)), stops, True
        at = _uuid7_ms(query.event_id)
        if at is not None:  # time-ordered ids: start a little before the id's time
            return self.cluster.for_time(keys, at - 120_000), stops, True
        budget = query.limit if not query.filtered else self.max_scan_records
        share = max(1, math.ceil(budget / max(1, len(keys))))
        return {k: max(earliest[k], stops[k] - share) for k in keys}, stops, False

    def browse(  # noqa: PLR0912 - one bounded read loop; splitting it would hide the bounds
        self, topic: str, query: BrowseQuery, *, after: dict[int, int] | None = None
    ) -> BrowseResult:
        """Records of ``topic`` matching ``query`` (newest first), or after ``after`` (follow)."""
        began = time.perf_counter()
        chosen = [p for p in self.partitions(topic) if query.partition is None or p == query.partition]
        keys = [(topic, p) for p in chosen]
        earliest, end = self.cluster.earliest(keys), self.cluster.latest(keys)
        if after is not None:
            starts = {k: max(earliest[k], after.get(k[1], end[k])) for k in keys}
            stops, forward = dict(end), True
        else:
            starts, stops, forward = self._starts(topic, keys, query, earliest, end)
        if forward and not query.filtered:  # the first page by time is within each partition's first page
            stops = {k: min(stops[k], starts[k] + query.limit) for k in keys}
        work = {k: stops[k] for k in keys if starts[k] < stops[k]}
        positions = {k[1]: starts[k] for k in keys}
        matches: list[RecordView] = []
        scanned, cut = 0, None
        deadline = time.monotonic() + self.max_scan_seconds
        if work:
            with self._reading() as consumer:
                consumer.assign([TopicPartition(t, p, starts[(t, p)]) for t, p in work])
                while work:
                    if scanned >= self.max_scan_records:
                        cut = f"the scan bound ({self.max_scan_records} records)"
                        break
                    if time.monotonic() > deadline:
                        cut = f"the time bound ({self.max_scan_seconds:g} s)"
                        break
                    if forward and len(matches) >= query.limit:
                        cut = f"the page size ({query.limit})"
                        break
                    for msg in consumer.consume(500, 0.05):
                        err = msg.error()
                        if err is not None:
                            if err.code() != KafkaError._PARTITION_EOF:
                                raise EvstreamError(f"reading {topic}: {err.str()}")
                            continue
                        key, offset = (msg.topic() or "", msg.partition() or 0), msg.offset() or 0
                        if key not in work or offset < starts[key] or offset >= work[key]:
                            continue
                        scanned += 1
                        positions[key[1]] = offset + 1
                        view = self._light(msg)
                        if _matches(view, query) and (not forward or len(matches) < query.limit):
                            matches.append(view)
                    for tp in consumer.position([TopicPartition(*k) for k in work]):
                        if tp.offset >= work[(tp.topic, tp.partition)]:
                            positions[tp.partition] = max(positions[tp.partition], tp.offset)
                            del work[(tp.topic, tp.partition)]
        matches.sort(key=lambda r: (r.timestamp or datetime.min.replace(tzinfo=UTC), r.partition, r.offset))
        page = matches[-query.limit :] if not forward else matches[: query.limit]
        page.reverse()
        for view in page:
            self._decode(view)
        return BrowseResult(page, scanned, cut, positions, (time.perf_counter() - began) * 1000)

    def _light(self, msg: Message) -> RecordView:
        """What the filters need, without decoding the value."""
        headers = [(k, _text(v) or "") for k, v in header_pairs(msg)]
        found = dict(headers)
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        kind, stamp = msg.timestamp()
        key = msg.key()
        view = RecordView(
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp=datetime.fromtimestamp(stamp / 1000, UTC) if kind and stamp >= 0 else None,
            key=_text(key),
            headers=headers,
            event_type=found.get("ce_type", ""),
            event_id=found.get("ce_id", ""),
            correlation_id=found.get("ce_correlationid"),
            raw=msg.value(),
        )
        if not view.event_type:  # a foreign record: type from the writer schema, id from its position
            view.foreign = True
            view.event_id = str(derived_event_id(topic, partition, offset))
            view.event_type = self._record_name(view)
        return view

    def _record_name(self, view: RecordView) -> str:
        where = RecordCoordinates(view.topic, view.partition, view.offset)
        try:
            if self.reader is not None:
                return self.reader.model_for(view.raw, where).__name__
            return self.codec.record_name(self.codec.schema_id_of(view.raw, where)).rpartition(".")[2]
        except Exception:  # undecodable or an unknown record name: shown as such, decoded later
            try:
                return self.codec.record_name(self.codec.schema_id_of(view.raw, where)).rpartition(".")[2]
            except Exception:
                return "?"

    def _decode(self, view: RecordView) -> None:
        where = RecordCoordinates(view.topic, view.partition, view.offset)
        try:
            view.schema_id = self.codec.schema_id_of(view.raw, where)
        except EvstreamError as exc:
            view.error = f"{type(exc).__name__}: {exc}"
            return
        try:
            if view.foreign:
                stamp = int(view.timestamp.timestamp() * 1000) if view.timestamp else None
                envelope = Envelope.derived(view.event_type, view.topic, view.partition, view.offset, stamp)
            else:
                envelope = Envelope.from_headers(view.headers)
            view.envelope = json.loads(envelope.model_dump_json())
        except (EvstreamError, ValueError) as exc:
            view.error = f"envelope: {exc}"
        try:
            if self.reader is not None and self.catalog is not None:
                model = (
                    self.reader.model_for(view.raw, where)
                    if view.foreign
                    else self.catalog.model(view.event_type)
                )
                view.data = self.reader.decode(model, view.raw, where).model_dump(mode="json")
            else:
                view.data = json.loads(json.dumps(self.codec.decode_any(view.raw, where), default=str))
        except Exception as exc:  # shown on the record: the browser must never fail on one record
            try:
                view.data = json.loads(json.dumps(self.codec.decode_any(view.raw, where), default=str))
                view.error = f"not read as a catalog model ({type(exc).__name__}: {exc}); writer schema shown"
            except Exception as inner:
                view.error = f"{type(inner).__name__}: {inner}"

    # -- groups -------------------------------------------------------------------------------
    def groups(self) -> list[dict[str, Any]]:
        return [{"group_id": g.group_id, "state": g.state, "type": g.type} for g in list_groups(self.admin)]

    def group(self, group_id: str) -> GroupDescription:
        return describe_group(self.admin, group_id)

    # -- schemas ------------------------------------------------------------------------------
    def subjects(self, contains: str = "", limit: int = 100) -> tuple[list[dict[str, Any]], int]:
        """Subjects whose name contains ``contains`` (the first ``limit`` with their versions), and
        how many matched."""
        names = sorted(s for s in self.registry.get_subjects() if contains in s)
        rows = [{"subject": s, "versions": self.registry.get_versions(s)} for s in names[:limit]]
        return rows, len(names)

    def compatibility(self, subject: str) -> str:
        try:
            return str(self.registry.get_compatibility(subject))
        except Exception:  # no subject-level setting: the global one applies
            try:
                return f"{self.registry.get_compatibility()} (global)"
            except Exception as exc:
                return f"unknown ({type(exc).__name__})"

    def schema_text(self, subject: str, version: int) -> tuple[int, str]:
        found = self.registry.get_version(subject, version)
        text = json.dumps(json.loads(found.schema.schema_str or "{}"), indent=2, sort_keys=False)
        return int(found.schema_id or 0), text

    def diff(self, subject: str, a: int, b: int) -> list[str]:
        (_, old), (_, new) = self.schema_text(subject, a), self.schema_text(subject, b)
        return list(
            difflib.unified_diff(old.splitlines(), new.splitlines(), f"v{a}", f"v{b}", lineterm="", n=3)
        )

    def versions_of(self, schema_id: int, topic: str) -> list[tuple[str, int]]:
        """The (subject, version) pairs registered with ``schema_id`` (cached), those of ``topic``'s
        subjects (TopicRecordName, TopicName) first; at most 5."""
        if schema_id not in self._versions:
            found = self.registry.get_schema_versions(schema_id)
            self._versions[schema_id] = [(str(v.subject), int(v.version or 0)) for v in found]
        pairs = self._versions[schema_id]
        own = [(s, v) for s, v in pairs if s.startswith(f"{topic}-")]
        return (own or pairs)[:5]

    def usage(self, topic: str, sample: int = 2000) -> tuple[list[dict[str, Any]], int]:
        """Which schema versions the newest ``sample`` records of ``topic`` were written with."""
        counts: dict[tuple[str, int | None], int] = {}
        result = self.browse(topic, BrowseQuery(limit=min(sample, self.max_scan_records)))
        for view in result.records:
            counts[(view.event_type, view.schema_id)] = counts.get((view.event_type, view.schema_id), 0) + 1
        rows = [
            {
                "event_type": event_type,
                "schema_id": sid,
                "versions": self.versions_of(sid, topic) if sid is not None else [],
                "records": n,
            }
            for (event_type, sid), n in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0))
        ]
        return rows, result.scanned


def config_source(source: object) -> str:
    """A config entry's source as its name (``DYNAMIC_TOPIC_CONFIG``, ``DEFAULT_CONFIG``, ...).

    ``describe_configs`` gives ``ConfigEntry.source`` as librdkafka's plain int, not the
    :class:`ConfigSource` enum its signature names, so ``.name`` is not there to read: look the
    number up in the enum (an unknown one is shown as ``source N``)."""
    if isinstance(source, ConfigSource):
        return source.name
    try:
        return ConfigSource(int(str(source))).name
    except ValueError:
        return f"source {source}"


def _uuid7_ms(text: str | None) -> int | None:
    try:
        value = uuid.UUID(text or "")
    except ValueError:
        return None
    return value.int >> 80 if value.version == 7 else None


def _matches(view: RecordView, query: BrowseQuery) -> bool:
    if query.event_type and view.event_type != query.event_type:
        return False
    if query.key and view.key != query.key:
        return False
    if query.event_id and view.event_id != query.event_id:
        return False
    if query.correlation_id and view.correlation_id != query.correlation_id:
        return False
    if query.from_time and (view.timestamp is None or view.timestamp < query.from_time):
        return False
    return not (query.to_time and (view.timestamp is None or view.timestamp > query.to_time))


class LagSampler:
    """Samples every group's total and per-partition lag while the console runs (a thread)."""

    def __init__(self, backend: Backend, interval_s: float, keep: int = 720, max_groups: int = 50) -> None:
        self.backend = backend
        self.interval_s = interval_s
        self.max_groups = max_groups
        self.samples: dict[str, deque[tuple[float, int]]] = {}
        self._keep = keep
        self._viewed: dict[str, None] = {}  # groups pages showed, the latest last (insertion order)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="evstream-console-lag", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + _TIMEOUT)

    def record(self, description: GroupDescription, *, viewed: bool = False) -> None:
        """One sample; ``viewed``: a page showed the group, so it is sampled before the others."""
        if viewed:
            self._viewed.pop(description.group_id, None)
            self._viewed[description.group_id] = None
            while len(self._viewed) > self.max_groups:
                del self._viewed[next(iter(self._viewed))]
        series = self.samples.setdefault(description.group_id, deque(maxlen=self._keep))
        series.append((time.time(), description.total_lag))

    def sample_once(self) -> None:
        try:
            listed = [g.group_id for g in list_groups(self.backend.admin)]
        except EvstreamError:
            return
        # the groups a page showed first (the latest first), then the rest by name
        present, seen = set(listed), list(self._viewed)  # a copy: pages add to it meanwhile
        viewed = [g for g in reversed(seen) if g in present]
        first = set(viewed)
        chosen = viewed + [g for g in listed if g not in first]
        for group_id in chosen[: self.max_groups]:
            with contextlib.suppress(EvstreamError, KafkaException):
                self.record(describe_group(self.backend.admin, group_id))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample_once()
            self._stop.wait(self.interval_s)

    def behind_since(self, group_id: str) -> datetime | None:
        """When the current run of samples with lag > 0 began (None: not behind)."""
        since = None
        for at, lag in self.samples.get(group_id, ()):
            since = (since or at) if lag > 0 else None
        return datetime.fromtimestamp(since, UTC) if since is not None else None
