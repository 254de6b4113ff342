"""Stream-processing settings: which topics, which state store, which guarantee."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["StreamsSettings", "default_store"]


def default_store() -> str:
    """``rocksdb://`` (via rocksdict) when it is installed, else in-memory tables."""
    return "rocksdb://" if importlib.util.find_spec("rocksdict") is not None else "memory://"


class StreamsSettings(BaseSettings):
    """How stream apps run (and the demo's topics). Every field reads ``EVSTREAM_STREAMS_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="EVSTREAM_STREAMS_", frozen=True, extra="ignore")

    app_id: str = Field(
        default="evstream-demo", min_length=1, description="App id: consumer group and topic prefix."
    )
    orders_topic: str = "orders"
    customers_topic: str = "customers"
    tiers_topic: str = "customer-tiers"
    partitions: int = Field(
        default=3,
        ge=1,
        description="Partitions of the by-customer topic and the tables (= the customers topic's).",
    )
    window_s: int = Field(default=60, ge=1, description="Tumbling window of the demo's revenue table.")
    window_grace_s: float = Field(
        default=3600.0,
        ge=0,
        description="Demo: how long after a window's end (in stream time) its late events still count.",
    )
    commit_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="How often a worker commits: derived events acknowledged, changelogs written,"
        " offsets committed (exactly_once: one transaction per interval, so derived events become"
        " visible to read_committed consumers at this pace).",
    )
    producer_linger_ms: int = Field(
        default=5,
        ge=0,
        le=1000,
        description="How long the producer waits to batch derived events and changelog records.",
    )
    batch_size: int = Field(
        default=500, ge=1, le=100_000, description="Records taken from the consumer per batch."
    )
    group_protocol: Literal["classic", "consumer"] = Field(
        default="classic",
        description="classic: the range assignor (co-partitioned topics land on one worker), eager"
        " rebalances; consumer: KIP-848 (server-side range assignor, incremental rebalances;"
        " Kafka 4.0+ with group.version=1; session timeout set by the broker's group config).",
    )
    store: str = Field(
        default_factory=default_store,
        description="memory:// (recovered from the changelogs on assignment) or rocksdb:// (files"
        " kept across restarts; recovery reads only the changelog past their checkpoint); default"
        " rocksdb:// when rocksdict is installed.",
    )
    data_dir: Path | None = Field(
        default=None,
        description="Where table stores (rocksdb://) keep their files; default <app_id>-data in the "
        "working directory. A cache: the changelogs rebuild it.",
    )
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        default="at_least_once",
        description="at_least_once: state updated once per source offset, derived events at least"
        " once (deterministic ids); exactly_once: each commit interval is one Kafka transaction.",
    )
    transaction_timeout_s: float = Field(
        default=10.0,
        ge=1,
        description="exactly_once: how long the broker keeps a dead worker's open transaction"
        " before aborting it (read_committed readers of its topics wait that long).",
    )
    replication_factor: int = Field(
        default=1, ge=1, description="Of the topics the worker creates (changelogs, internal topics)."
    )
    session_timeout_s: float = Field(
        default=30.0, ge=6, description="A killed worker's partitions move to the others after this long."
    )
