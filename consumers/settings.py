"""Consumer settings: at-least-once defaults (offsets stored after handling, committed periodically)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ConsumerSettings"]


class ConsumerSettings(BaseSettings):
    """How :class:`consumers.ConsumerRunner` consumes. Every field reads ``EVSTREAM_CONSUMER_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="EVSTREAM_CONSUMER_", frozen=True, extra="ignore")

    auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest", description="Where a new group starts; default earliest."
    )
    batch_size: int = Field(default=500, ge=1, le=100_000, description="Records per consume() call.")
    poll_timeout_s: float = Field(
        default=0.5, gt=0, description="How long the runner waits for a first record when none is fetched."
    )
    batch_wait_s: float = Field(
        default=0.0,
        ge=0,
        le=10,
        description="Once a record is in hand, wait this long for the batch to fill up to batch_size"
        " (throughput over latency). Default 0: hand over what has arrived, never wait for records"
        " that are not there. Env EVSTREAM_CONSUMER_BATCH_WAIT_S.",
    )
    gc_freeze: bool = Field(
        default=False,
        description="Collect once and gc.freeze() what exists when run() starts (modules, schemas,"
        " clients), so CPython's cyclic GC does not rescan it while batches of records are alive"
        " (measured: a batch handler 38 -> 24 us CPU per event, single handlers ~10 % less)."
        " Process-wide (objects alive then are never collected), so off for a library caller;"
        " `evstream consume`, which owns its process, turns it on. Env EVSTREAM_CONSUMER_GC_FREEZE.",
    )
    commit_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="Commit stored offsets this often (and after the first handled batch, and every"
        " commit_every_records).",
    )
    commit_every_records: int = Field(
        default=1000,
        ge=0,
        description="Also commit once this many records were finished since the last commit, whichever"
        " comes first with commit_interval_s, so a consumer crashing in a loop still makes progress"
        " (0: by interval only). Env EVSTREAM_CONSUMER_COMMIT_EVERY_RECORDS; default 1000.",
    )
    session_timeout_ms: int = Field(default=45_000, ge=6000)
    max_poll_interval_ms: int = Field(
        default=300_000, ge=6000, description="Kafka drops a member that does not poll this often."
    )
    batch_deadline_s: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Stop working through a fetched batch after this long, rewind to the first unhandled"
            " record and poll again, so slow handlers never exceed max_poll_interval_ms"
            " (default: a third of it)."
        ),
    )
    prefetch_max_kbytes: int = Field(
        default=16_384, ge=1024, description="Bound on records fetched ahead of the handlers, per client."
    )
    retry_attempts: int = Field(
        default=3, ge=1, le=100, description="In-place attempts per record, first included."
    )
    retry_wait_initial_s: float = Field(default=0.1, ge=0, description="First backoff between attempts.")
    retry_wait_max_s: float = Field(default=2.0, ge=0, description="Backoff cap between attempts.")
    retry_topic_delays_s: tuple[float, ...] = Field(
        default=(),
        description=(
            "Delays of the retry-topic tiers tried after in-place retries, e.g. [1, 10, 60]"
            " (env: a JSON list). Empty: straight to the dead-letter topic."
        ),
    )
    ordered_retry_wait_s: float = Field(
        default=1.0, gt=0, description="Block-and-retry (ordered handlers): first pause of the partition."
    )
    ordered_retry_wait_max_s: float = Field(default=60.0, gt=0, description="Block-and-retry pause cap.")
    ordered_max_attempts: int = Field(
        default=20,
        ge=0,
        description="Block-and-retry: dead-letter after this many attempts (0: until it succeeds).",
    )
    group_instance_id: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "Static membership: a member restarted with the same id gets its partitions back"
            " without a rebalance (unique per process)."
        ),
    )
    statistics_interval_ms: int = Field(
        default=5000, ge=0, description="How often the lag-per-partition gauge is refreshed (0: never)."
    )
    dead_letter_suffix: str = Field(
        default=".dlq",
        min_length=1,
        description="Dead-letter topic = source topic + this suffix (never empty).",
    )
    unknown_event_policy: Literal["skip", "dead_letter", "fail"] = Field(
        default="skip", description="What to do with an event type no handler is registered for."
    )
    shutdown_timeout_s: float = Field(default=30.0, gt=0, description="Deadline for a graceful stop.")
    unknown_schema_grace_s: float = Field(
        default=600.0,
        ge=0,
        description=(
            "A record whose schema id the registry does not know (yet: a registry restarted without it,"
            " a schema replicated late) holds its partition and is retried with backoff for this long"
            " before it is dead-lettered (reason unknown_schema_id). Env"
            " EVSTREAM_CONSUMER_UNKNOWN_SCHEMA_GRACE_S; default 600 (10 minutes)."
        ),
    )
    unknown_schema_retry_wait_s: float = Field(
        default=1.0, gt=0, description="First wait before asking the registry again for an unknown id."
    )
    unknown_schema_retry_wait_max_s: float = Field(
        default=30.0, gt=0, description="Cap of the doubling wait between those attempts."
    )

    @field_validator("retry_topic_delays_s")
    @classmethod
    def _positive_delays(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(d <= 0 for d in value):
            raise ValueError("retry topic delays must be > 0 seconds")
        if len(value) > 10:
            raise ValueError("at most 10 retry tiers")
        return value

    @property
    def batch_deadline(self) -> float:
        """Seconds a fetched batch may take before the runner polls again."""
        return self.batch_deadline_s or self.max_poll_interval_ms / 3000

    def librdkafka(self, group_id: str) -> dict[str, Any]:
        """These settings in librdkafka's spelling (merged over the connection config)."""
        return {
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,  # offsets are stored only after the handler succeeded
            "auto.offset.reset": self.auto_offset_reset,
            "isolation.level": "read_committed",
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": self.session_timeout_ms,
            "max.poll.interval.ms": self.max_poll_interval_ms,
            "statistics.interval.ms": self.statistics_interval_ms,
            "queued.max.messages.kbytes": self.prefetch_max_kbytes,
            **({"group.instance.id": self.group_instance_id} if self.group_instance_id else {}),
        }
