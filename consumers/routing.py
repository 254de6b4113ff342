"""Where failed records go: the group's tiered retry topics, then the dead-letter topic.

Retry topics belong to one consumer group (another group reading the same source topic must not
see this group's retries): ``<source>.<group>.retry.<delay>``, for example
``orders.billing.retry.10s``. The runner subscribes to them next to the source topics and holds
each record back (pausing that partition) until its due time. Writes are acknowledged before
the source offset is stored, so a failed record is never dropped on the way.

Dead letters of every group go to the shared ``<source><suffix>`` (``orders.dlq``), each record
naming its group (``evstream.dlq.group``); ``evstream dlq redrive`` sends a record back to the
group's own ``<source>.<group>.redrive`` topic, which the runner reads (like its source) when it
exists.

The runner does not create these topics: they are declared with the others (topics as code,
:func:`evstream.consumers.add_failure_topics` or ``evstream topics add-retry-topics`` writes the
declarations) and :meth:`RetryTopics.check` refuses to start without them.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from evstream.consumers.failures import Headers, Origin, dead_letter_headers, redrive_topic, retry_headers
from evstream.consumers.settings import ConsumerSettings
from evstream.errors import MissingTopicsError, PublishError, TopicsAdminError, TopicsFileError
from evstream.security import topic_write_error
from evstream.topics.spec import TopicsFile, TopicSpec, load_topics_file

__all__ = [
    "FailureRouter",
    "FailureWriter",
    "KafkaFailureWriter",
    "RetryTopics",
    "add_failure_topics",
    "delay_label",
    "failure_topic_specs",
]

FailureWriter = Callable[[Message, str, Headers], None]
"""Writes a failed record's key and value with ``headers`` to a topic, acknowledged, or raises."""


def delay_label(delay_s: float) -> str:
    """``0.5 -> '500ms'``, ``10 -> '10s'``, ``60 -> '1m'``, ``7200 -> '2h'``."""
    ms = round(delay_s * 1000)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


@dataclass(frozen=True, slots=True)
class RetryTopics:
    """The retry tiers of one group over its source topics (tier n waits ``delays_s[n-1]``)."""

    group_id: str
    sources: tuple[str, ...]
    delays_s: tuple[float, ...]
    _tiers: dict[str, int] = field(init=False, repr=False, compare=False)

    def topic(self, source: str, tier: int) -> str:
        """The retry topic of ``source`` for ``tier`` (1-based)."""
        return f"{source}.{self.group_id}.retry.{delay_label(self.delays_s[tier - 1])}"

    def all(self) -> list[str]:
        return [self.topic(s, t) for s in self.sources for t in range(1, len(self.delays_s) + 1)]

    def redrive(self, source: str) -> str:
        """The group's redrive topic of ``source`` (``<source>.<group>.redrive``)."""
        return redrive_topic(source, self.group_id)

    def source_of(self, topic: str) -> str:
        """The source topic a subscribed redrive topic belongs to (``topic`` itself otherwise)."""
        return next((s for s in self.sources if self.redrive(s) == topic), topic)

    def tier_of(self, topic: str) -> int:
        """The tier a subscribed topic belongs to (0 for a source topic)."""
        return self._tiers.get(topic, 0)

    def __post_init__(self) -> None:
        tiers = {self.topic(s, t): t for s in self.sources for t in range(1, len(self.delays_s) + 1)}
        object.__setattr__(self, "_tiers", tiers)

    def failure_topics(self, dead_letter_suffix: str) -> list[str]:
        """Every retry topic of the group, then every dead-letter topic, source by source."""
        return [
            *self.all(),
            *(f"{source}{dead_letter_suffix}" for source in self.sources),
        ]

    def check(self, admin: AdminClient, dead_letter_suffix: str, timeout: float = 30.0) -> list[str]:
        """Make sure the source, retry and dead-letter topics exist, before anything is consumed;
        returns the group's redrive topics that exist (optional: read only when declared).

        A missing source topic is :class:`TopicsAdminError`; missing retry or dead-letter topics
        are one :class:`MissingTopicsError` listing them all (the runner creates nothing).
        """
        metadata = admin.list_topics(timeout=timeout)
        for source in self.sources:
            found = metadata.topics.get(source)
            if found is None or found.error is not None:
                raise TopicsAdminError(
                    f"topic {source!r} does not exist; create it first (evstream topics apply)"
                )
        missing = [
            name
            for name in self.failure_topics(dead_letter_suffix)
            if name not in metadata.topics or metadata.topics[name].error is not None
        ]
        if missing:
            raise MissingTopicsError(self.group_id, self.sources, missing)
        redrive = [self.redrive(source) for source in self.sources]
        return [t for t in redrive if t in metadata.topics and metadata.topics[t].error is None]


class KafkaFailureWriter:
    """The runner's :data:`FailureWriter`: produce with the same key, wait for the acknowledgement."""

    def __init__(self, producer: Producer, timeout: float = 30.0) -> None:
        self._producer = producer
        self._timeout = timeout

    def __call__(self, msg: Message, target: str, headers: Headers) -> None:
        # Same key, so the retry record of a key lands in one retry partition, in failure order.
        outcome: list[KafkaError | None] = []
        try:
            self._producer.produce(
                target,
                value=msg.value(),
                key=msg.key(),
                headers=headers,
                on_delivery=lambda err, _m: outcome.append(err),
            )
        except KafkaException as exc:
            raise PublishError(f"cannot write {msg.topic()}@{msg.offset()} to {target}: {exc}") from exc
        self._producer.flush(self._timeout)
        first = outcome[0] if outcome else None
        denied = (
            None
            if first is None
            else topic_write_error(first, topic=target, what=f"{msg.topic()}@{msg.offset()}")
        )
        if denied is not None:  # no WRITE ACL on the retry/dead-letter topic: the record stays where it is
            raise denied
        if not outcome or outcome[0] is not None:
            # The caller must not store the offset of a record that is neither handled nor safely moved.
            detail = (
                outcome[0].str()
                if outcome and outcome[0] is not None
                else f"no acknowledgement in {self._timeout:.0f}s"
            )
            raise PublishError(f"writing {msg.topic()}@{msg.offset()} to {target} failed: {detail}")


class FailureRouter:
    """Writes failed records to the next retry tier or the dead-letter topic, through ``write``
    (:class:`KafkaFailureWriter` in the runner, an in-memory recorder in :mod:`evstream.testing`)."""

    def __init__(self, write: FailureWriter, retry: RetryTopics, dead_letter_suffix: str) -> None:
        self._write = write
        self.retry = retry
        self._suffix = dead_letter_suffix

    def dead_letter_topic(self, origin: Origin) -> str:
        """``<source topic><suffix>``, also for a record read back from a retry or redrive topic."""
        return f"{self.retry.source_of(origin.topic)}{self._suffix}"

    def next_tier(self, origin: Origin) -> int | None:
        """The tier a record failing at ``origin.tier`` goes to, or None when it is the DLQ's turn."""
        return origin.tier + 1 if origin.tier < len(self.retry.delays_s) else None

    def to_retry(self, msg: Message, origin: Origin, error: BaseException, tier: int) -> str:
        """Write ``msg`` to its retry topic of ``tier``, due after that tier's delay; the topic."""
        origin = replace(origin, topic=self.retry.source_of(origin.topic))
        target = self.retry.topic(origin.topic, tier)
        due = int((time.time() + self.retry.delays_s[tier - 1]) * 1000)
        self._write(msg, target, retry_headers(msg, origin, error, tier=tier, due_ms=due))
        return target

    def to_dead_letter(self, msg: Message, origin: Origin, reason: str, error: BaseException | None) -> str:
        """Write ``msg`` to the dead-letter topic of its source, with the why and the group; the topic."""
        origin = replace(origin, topic=self.retry.source_of(origin.topic))
        target = self.dead_letter_topic(origin)
        headers = dead_letter_headers(msg, origin, group=self.retry.group_id, reason=reason, error=error)
        self._write(msg, target, headers)
        return target


def failure_topic_specs(
    group_id: str,
    sources: dict[str, int],
    settings: ConsumerSettings | None = None,
    *,
    redrive: bool = False,
) -> list[TopicSpec]:
    """Declarations of the retry topics of ``group_id`` and the dead-letter topics of ``sources``
    (source name -> partitions; each gets as many partitions as its source), for ``settings``'
    ``retry_topic_delays_s`` and ``dead_letter_suffix``; with ``redrive``, also the group's redrive
    topics ``<source>.<group>.redrive`` (optional: the runner reads them when they exist)."""
    settings = settings or ConsumerSettings()
    retry = RetryTopics(group_id, tuple(sources), settings.retry_topic_delays_s)
    specs = []
    for source, partitions in sources.items():
        names = [retry.topic(source, t) for t in range(1, len(retry.delays_s) + 1)]
        names.append(f"{source}{settings.dead_letter_suffix}")
        if redrive:
            names.append(retry.redrive(source))
        specs += [TopicSpec(name=name, partitions=partitions) for name in names]
    return specs


def add_failure_topics(
    path: Path,
    group_id: str,
    topics: Sequence[str],
    settings: ConsumerSettings | None = None,
    *,
    redrive: bool = True,
) -> list[TopicSpec]:
    """Append the declarations of ``group_id``'s retry, dead-letter and (``redrive``) redrive
    topics over ``topics`` to the
    topics file at ``path`` (comments and layout kept); returns those added (none when all are
    declared already). The source topics must be declared in the file: their partition counts
    are copied. Apply the file afterwards (``evstream topics apply``).
    """
    declared = load_topics_file(path)
    by_name = {t.name: t for t in declared.topics}
    undeclared = [t for t in topics if t not in by_name]
    if undeclared:
        raise TopicsFileError(
            f"{path}: source topic(s) not declared: {', '.join(undeclared)}; declare them first"
        )
    sources = {t: by_name[t].partitions for t in topics}
    wanted = failure_topic_specs(group_id, sources, settings, redrive=redrive)
    added = [spec for spec in wanted if spec.name not in by_name]
    if not added:
        return []
    text = path.read_text()
    item = re.search(r"^( *)- ", text, re.MULTILINE)
    indent = item.group(1) if item else "  "
    block = [f"{indent}# retry, dead-letter and redrive topics of consumer group {group_id}"]
    for spec in added:
        block += [f"{indent}- name: {spec.name}", f"{indent}  partitions: {spec.partitions}"]
    appended = text + ("" if text.endswith("\n") or not text else "\n") + "\n".join(block) + "\n"
    try:
        check = TopicsFile.model_validate(yaml.safe_load(appended))
        ok = {spec.name for spec in added} <= {t.name for t in check.topics}
    except (yaml.YAMLError, ValueError):
        ok = False
    if not ok:  # a layout the text append cannot extend (e.g. a flow-style list): rewrite it all
        merged = TopicsFile(topics=(*declared.topics, *added))
        appended = yaml.safe_dump(merged.model_dump(exclude_defaults=True), sort_keys=False)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(appended)
    os.replace(scratch, path)
    return added
