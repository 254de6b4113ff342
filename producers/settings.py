"""Producer settings: delivery defaults that never lose an acknowledged event."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ProducerSettings"]


class ProducerSettings(BaseSettings):
    """How :class:`producers.EventProducer` produces. Every field reads ``EVSTREAM_PRODUCER_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="EVSTREAM_PRODUCER_", frozen=True, extra="ignore")

    acks: Literal["all", "1", "0"] = Field(
        default="all", description="Env EVSTREAM_PRODUCER_ACKS; default all."
    )
    enable_idempotence: bool = Field(
        default=True, description="No duplicates or reordering on retry (librdkafka's default is off!)."
    )
    compression: Literal["lz4", "zstd", "snappy", "gzip", "none"] = Field(
        default="lz4", description="Env EVSTREAM_PRODUCER_COMPRESSION; default lz4."
    )
    linger_ms: int = Field(default=10, ge=0, le=1000, description="Batching delay; default 10 ms.")
    batch_size: int = Field(default=1_000_000, ge=1, description="Max bytes per partition batch.")
    queue_max_messages: int = Field(
        default=500_000, ge=1, description="Local queue bound (BufferError past it)."
    )
    delivery_timeout_ms: int = Field(
        default=120_000, ge=1000, description="After this a delivery is reported indeterminate, not lost."
    )
    transactional_id: str | None = Field(
        default=None, description="Set to enable transactions (atomic multi-topic publish)."
    )
    source: str = Field(
        default="evstream", description="The envelope's source (ce_source) unless a call sets it."
    )
    close_timeout_s: float = Field(
        default=30.0, ge=0, description="How long close() waits for in-flight events."
    )
    cluster_down_fail_s: float = Field(
        default=10.0,
        gt=0,
        description="When no broker has been reachable for this long, publish() fails at once with"
        " ClusterUnavailableError (nothing queued) and queued events never sent are failed (not"
        " written) instead of waiting for delivery_timeout_ms. Env EVSTREAM_PRODUCER_CLUSTER_DOWN_FAIL_S;"
        " default 10.",
    )
    recover_fenced: bool = Field(
        default=False,
        description="Transactional producers: also replace the instance after a fatal _FENCED (by"
        " default only other fatal errors are recovered: _FENCED usually means another live instance"
        " owns the transactional id, and taking it back would fence that one in turn).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ProducerSettings:
        if self.enable_idempotence and self.acks != "all":
            raise ValueError("enable_idempotence needs acks=all")
        if self.transactional_id is not None and self.delivery_timeout_ms > 900_000:
            raise ValueError("with transactions, delivery_timeout_ms must be <= 900000 (the broker's max)")
        return self

    def librdkafka(self) -> dict[str, Any]:
        """These settings in librdkafka's spelling (merged over the connection config)."""
        conf: dict[str, Any] = {
            "acks": self.acks,
            "enable.idempotence": self.enable_idempotence,
            "compression.type": self.compression,
            "linger.ms": self.linger_ms,
            "batch.size": self.batch_size,
            "queue.buffering.max.messages": self.queue_max_messages,
            "delivery.timeout.ms": self.delivery_timeout_ms,
            "partitioner": "murmur2_random",  # the Java client's partitioning for the same keys
        }
        if self.transactional_id is not None:
            conf["transactional.id"] = self.transactional_id
            # librdkafka requires message.timeout.ms <= transaction.timeout.ms (broker max: 15 min).
            conf["transaction.timeout.ms"] = max(60_000, self.delivery_timeout_ms)
        return conf
