"""A consumer group worker: a :class:`Handlers` module run by :class:`ConsumerRunner` next to
``/healthz``, ``/readyz`` and ``/metrics``, and the settings every worker process shares.

Needs no extra: ``evstream worker my.module:handlers --group G``.
"""

from __future__ import annotations

import logging

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from evstream.consumers.handlers import Handlers
from evstream.consumers.runner import ConsumerRunner
from evstream.consumers.settings import ConsumerSettings
from evstream.endpoints import load_settings
from evstream.errors import ConfigError
from evstream.ops import OpsServer
from evstream.settings import KafkaSettings, RegistrySettings

__all__ = ["WorkerSettings", "run_handlers"]

log = logging.getLogger("evstream.worker")


class WorkerSettings(BaseSettings):
    """The worker process. Every field reads ``EVSTREAM_WORKER_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="EVSTREAM_WORKER_", frozen=True, extra="ignore")

    http_host: str = Field(default="127.0.0.1", description="Bind address of /healthz, /readyz, /metrics.")
    http_port: int = Field(default=9102, ge=0, le=65535, description="0: any free port (logged).")
    group: str | None = Field(default=None, description="Consumer group, when running a Handlers module.")
    lag_interval_s: float = Field(default=5.0, gt=0, description="How often stream lag gauges refresh.")
    stall_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="faust apps only: exit with code 75 when a partition with lag makes no progress"
        " this long (a faust stall; evstream stream apps have no such failure mode).",
    )
    startup_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description=(
            "faust apps only: exit with code 75 (for the supervisor to restart it) if the app has not"
            " joined its group by then: faust occasionally stalls before subscribing."
        ),
    )
    log_level: str = "INFO"


def run_handlers(
    handlers: Handlers, settings: WorkerSettings, kafka: KafkaSettings, registry: RegistrySettings
) -> int:
    """Run ``handlers`` as the consumer group ``settings.group`` until SIGTERM/SIGINT; the exit code."""
    if not settings.group:
        raise ConfigError("a Handlers worker needs a consumer group: --group or EVSTREAM_WORKER_GROUP")
    runner = ConsumerRunner(
        settings.group,
        handlers,
        kafka=kafka,
        registry=registry,
        settings=load_settings(ConsumerSettings, prefix="EVSTREAM_CONSUMER_"),
    )
    ops = OpsServer(
        settings.http_host,
        settings.http_port,
        lambda: None if runner.assignment else "waiting for partition assignment",
    )
    log.info("operations endpoints on http://%s:%d", settings.http_host, ops.start())
    try:
        runner.run(install_signal_handlers=True)
    finally:
        ops.stop()
    return 0
