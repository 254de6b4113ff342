"""Diff declared topics against what the cluster has: a pure function, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from evstream.errors import PartitionDecreaseError, ReplicationChangeError
from evstream.topics.spec import TopicSpec

__all__ = ["ClusterTopic", "ConfigChange", "TopicChange", "plan_changes"]


@dataclass(frozen=True)
class ClusterTopic:
    """A topic as the cluster reports it."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ConfigChange:
    """One topic config to set; ``current`` is None for a topic that does not exist yet."""

    key: str
    current: str | None
    desired: str


@dataclass(frozen=True)
class TopicChange:
    """What ``apply`` will do to one topic."""

    spec: TopicSpec
    action: Literal["create", "update", "unchanged"]
    current_partitions: int | None
    config_changes: tuple[ConfigChange, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def adds_partitions(self) -> bool:
        return self.current_partitions is not None and self.spec.partitions > self.current_partitions


def _diff(spec: TopicSpec, current: ClusterTopic) -> TopicChange:
    if spec.partitions < current.partitions:
        raise PartitionDecreaseError(
            f"topic {spec.name!r}: cannot decrease partitions from {current.partitions} to {spec.partitions} "
            "(Kafka cannot remove partitions; create a new topic instead)"
        )
    if spec.replication_factor is not None and spec.replication_factor != current.replication_factor:
        raise ReplicationChangeError(
            f"topic {spec.name!r}: replication factor is {current.replication_factor}, declared "
            f"{spec.replication_factor}; changing it needs a partition reassignment, which apply does not do"
        )
    changes = tuple(
        ConfigChange(key, current.configs.get(key), value)
        for key, value in sorted(spec.desired_configs().items())
        if current.configs.get(key) != value
    )
    action: Literal["update", "unchanged"] = (
        "update" if changes or spec.partitions > current.partitions else "unchanged"
    )
    return TopicChange(spec, action, current.partitions, changes)


def plan_changes(specs: Iterable[TopicSpec], cluster: Mapping[str, ClusterTopic]) -> list[TopicChange]:
    """One :class:`TopicChange` per declared topic, in declaration order.

    Raises :class:`PartitionDecreaseError` or :class:`ReplicationChangeError` for changes Kafka
    (or this tool) cannot make, before anything is applied.
    """
    changes = []
    for spec in specs:
        current = cluster.get(spec.name)
        if current is None:
            configs = tuple(ConfigChange(k, None, v) for k, v in sorted(spec.desired_configs().items()))
            changes.append(TopicChange(spec, "create", None, configs))
        else:
            changes.append(_diff(spec, current))
    return changes
