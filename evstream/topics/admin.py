"""Read topics from the cluster and apply a plan, through confluent-kafka's AdminClient."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from evstream.errors import TopicsAdminError
from evstream.topics.plan import ClusterTopic, TopicChange

__all__ = ["apply_changes", "describe_topics", "list_topics"]

_TIMEOUT = 30.0
_METADATA_TIMEOUT = 10.0  # the first call: an unreachable cluster should fail fast


def _wait(futures: Mapping[Any, Future[Any]], what: str) -> None:
    failures = []
    for key, future in futures.items():
        name = getattr(key, "name", key)
        try:
            future.result(timeout=_TIMEOUT)
        except KafkaException as exc:
            failures.append(f"{what} {name}: {exc.args[0].str() if exc.args else exc}")
        except FutureTimeout:
            failures.append(f"{what} {name}: no answer from the cluster within {_TIMEOUT:.0f}s")
    if failures:
        raise TopicsAdminError("; ".join(failures))


def _metadata(admin: AdminClient) -> Any:
    try:
        return admin.list_topics(timeout=_METADATA_TIMEOUT)
    except KafkaException as exc:
        raise TopicsAdminError(
            f"cannot read cluster metadata: {exc.args[0].str() if exc.args else exc}"
        ) from exc


def describe_topics(admin: AdminClient, names: Iterable[str]) -> dict[str, ClusterTopic]:
    """The named topics that exist, with partition count, replication factor and their configs."""
    metadata = _metadata(admin)
    present = [name for name in names if name in metadata.topics]
    configs: dict[str, dict[str, str]] = {name: {} for name in present}
    if present:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in present]
        for resource, future in admin.describe_configs(resources, request_timeout=_TIMEOUT).items():
            try:
                entries = future.result(timeout=_TIMEOUT)
            except (KafkaException, FutureTimeout) as exc:
                raise TopicsAdminError(f"describe configs of {resource.name}: {exc or 'timed out'}") from exc
            configs[resource.name] = {
                key: entry.value for key, entry in entries.items() if entry.value is not None
            }
    return {name: _cluster_topic(metadata.topics[name], configs[name]) for name in present}


def _cluster_topic(meta: Any, configs: dict[str, str]) -> ClusterTopic:
    partitions = meta.partitions
    rf = len(partitions[0].replicas) if partitions else 0
    return ClusterTopic(name=meta.topic, partitions=len(partitions), replication_factor=rf, configs=configs)


def list_topics(admin: AdminClient, *, include_internal: bool = False) -> list[ClusterTopic]:
    """Every topic in the cluster (internal ``__*`` topics only when asked), sorted by name."""
    metadata = _metadata(admin)
    names = sorted(n for n in metadata.topics if include_internal or not n.startswith("__"))
    return [_cluster_topic(metadata.topics[n], {}) for n in names]


def apply_changes(admin: AdminClient, changes: Iterable[TopicChange]) -> None:
    """Create missing topics, add partitions and set configs, as the plan says."""
    changes = list(changes)
    creates = [
        NewTopic(
            c.name,
            num_partitions=c.spec.partitions,
            replication_factor=c.spec.replication_factor or -1,
            config=c.spec.desired_configs(),
        )
        for c in changes
        if c.action == "create"
    ]
    if creates:
        _wait(admin.create_topics(creates, request_timeout=_TIMEOUT), "create")
    grow = [
        NewPartitions(c.name, c.spec.partitions)
        for c in changes
        if c.action == "update" and c.adds_partitions
    ]
    if grow:
        _wait(admin.create_partitions(grow, request_timeout=_TIMEOUT), "add partitions to")
    alters = [
        ConfigResource(
            ConfigResource.Type.TOPIC,
            c.name,
            incremental_configs=[
                ConfigEntry(cc.key, cc.desired, incremental_operation=AlterConfigOpType.SET)
                for cc in c.config_changes
            ],
        )
        for c in changes
        if c.action == "update" and c.config_changes
    ]
    if alters:
        _wait(admin.incremental_alter_configs(alters, request_timeout=_TIMEOUT), "alter configs of")
