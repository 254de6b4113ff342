"""Where failed records go: the group's tiered retry topics, then the dead-letter topic.

Retry topics belong to one consumer group (another group reading the same source topic must not
see this group's retries): ``<source>.<group>.retry.<delay>``, for example
``orders.billing.retry.10s``. The runner subscribes to them next to the source topics and holds
each record back (pausing that partition) until its due time. Writes are acknowledged before
the source offset is stored, so a failed record is never dropped on the way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from evstream.consumers.failures import Origin, dead_letter_headers, retry_headers
from evstream.errors import PublishError, TopicsAdminError

__all__ = ["FailureRouter", "RetryTopics", "delay_label"]


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

    def tier_of(self, topic: str) -> int:
        """The tier a subscribed topic belongs to (0 for a source topic)."""
        return self._tiers.get(topic, 0)

    def __post_init__(self) -> None:
        tiers = {self.topic(s, t): t for s in self.sources for t in range(1, len(self.delays_s) + 1)}
        object.__setattr__(self, "_tiers", tiers)

    def ensure(self, admin: AdminClient, dead_letter_suffix: str, timeout: float = 30.0) -> list[str]:
        """Create missing retry and dead-letter topics (as many partitions as their source), so the
        first failure does not find its topic missing; returns the names created."""
        metadata = admin.list_topics(timeout=timeout)
        missing: list[NewTopic] = []
        for source in self.sources:
            found = metadata.topics.get(source)
            if found is None or found.error is not None:
                raise TopicsAdminError(
                    f"topic {source!r} does not exist; create it first (evstream topics apply)"
                )
            names = [self.topic(source, t) for t in range(1, len(self.delays_s) + 1)]
            names.append(f"{source}{dead_letter_suffix}")
            missing += [
                NewTopic(n, num_partitions=len(found.partitions)) for n in names if n not in metadata.topics
            ]
        created = []
        for name, future in (
            admin.create_topics(missing, request_timeout=timeout) if missing else {}
        ).items():
            try:
                future.result(timeout)
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise TopicsAdminError(f"cannot create {name}: {exc}") from exc
        return created


class FailureRouter:
    """Writes failed records to the next retry tier or the dead-letter topic, acknowledged."""

    def __init__(self, producer: Producer, retry: RetryTopics, dead_letter_suffix: str) -> None:
        self._producer = producer
        self.retry = retry
        self._suffix = dead_letter_suffix

    def dead_letter_topic(self, origin: Origin) -> str:
        return f"{origin.topic}{self._suffix}"

    def next_tier(self, origin: Origin) -> int | None:
        """The tier a record failing at ``origin.tier`` goes to, or None when it is the DLQ's turn."""
        return origin.tier + 1 if origin.tier < len(self.retry.delays_s) else None

    def to_retry(self, msg: Message, origin: Origin, error: BaseException, tier: int) -> str:
        target = self.retry.topic(origin.topic, tier)
        due = int((time.time() + self.retry.delays_s[tier - 1]) * 1000)
        self._send(msg, target, retry_headers(msg, origin, error, tier=tier, due_ms=due))
        return target

    def to_dead_letter(self, msg: Message, origin: Origin, reason: str, error: BaseException | None) -> str:
        target = self.dead_letter_topic(origin)
        self._send(msg, target, dead_letter_headers(msg, origin, reason=reason, error=error))
        return target

    def _send(self, msg: Message, target: str, headers: list[tuple[str, str | bytes | None]]) -> None:
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
        self._producer.flush(30)
        if not outcome or outcome[0] is not None:
            # The caller must not store the offset of a record that is neither handled nor safely moved.
            detail = outcome[0].str() if outcome and outcome[0] is not None else "no acknowledgement in 30s"
            raise PublishError(f"writing {msg.topic()}@{msg.offset()} to {target} failed: {detail}")
