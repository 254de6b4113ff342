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
        default="evstream-demo", min_length=1, description="faust app id: group and topic prefix."
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
        default=2.8,
        gt=0,
        description="How often offsets are committed; table state is written to the changelogs just before.",
    )
    producer_linger_ms: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="How long faust's producer waits to batch derived events and changelog records"
        " (as EventProducer's linger_ms): 0 sends each record on its own (+17 % events/s at 10 in"
        " bench/streams.py), more adds that much latency to derived events.",
    )
    store: str = Field(
        default_factory=default_store, description="memory:// (changelog recovery) or rocksdb://."
    )
    data_dir: Path | None = Field(
        default=None,
        description="Where table stores (rocksdb://) keep their files; default <app_id>-data in the "
        "working directory. A cache: the changelogs rebuild it.",
    )
    processing_guarantee: Literal["at_least_once"] = Field(
        default="at_least_once",
        description="Only at_least_once (with offset-deduplicated state): faust's exactly_once makes "
        "no progress on Kafka 4.1 (bench/RESULTS.md).",
    )
    replication_factor: int = Field(
        default=1, ge=1, description="Of the topics faust creates (changelogs...)."
    )
    session_timeout_s: float = Field(
        default=30.0, ge=6, description="A killed worker's partitions move to the others after this long."
    )
