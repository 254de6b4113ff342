"""Consumer groups as the cluster sees them: state, members, assignments, committed offsets, lag."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from evstream.errors import EvstreamError

__all__ = ["GroupDescription", "GroupListing", "PartitionLag", "describe_group", "list_groups"]

_TIMEOUT = 30.0


@dataclass(frozen=True)
class GroupListing:
    group_id: str
    state: str
    type: str


@dataclass(frozen=True)
class PartitionLag:
    """One partition of a group: committed offset (None if never committed), end offset, lag, owner."""

    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int | None
    member: str | None


@dataclass(frozen=True)
class GroupDescription:
    group_id: str
    state: str
    coordinator: str
    members: list[dict[str, Any]] = field(default_factory=list)
    partitions: list[PartitionLag] = field(default_factory=list)

    @property
    def total_lag(self) -> int:
        return sum(p.lag or 0 for p in self.partitions)


def _name(value: Any) -> str:
    return str(getattr(value, "name", value))


def list_groups(admin: AdminClient, *, include_internal: bool = False) -> list[GroupListing]:
    """Every consumer group the cluster knows, sorted by id; those whose id starts with ``__``
    (the local stack's registry's own groups) only with ``include_internal``."""
    try:
        result = admin.list_consumer_groups(request_timeout=_TIMEOUT).result(timeout=_TIMEOUT)
    except KafkaException as exc:
        raise EvstreamError(f"cannot list consumer groups: {exc}") from exc
    listings = [
        GroupListing(g.group_id, _name(g.state), _name(getattr(g, "type", "")))
        for g in result.valid
        if include_internal or not g.group_id.startswith("__")
    ]
    return sorted(listings, key=lambda g: g.group_id)


def describe_group(admin: AdminClient, group_id: str) -> GroupDescription:
    """State, members with their assignments, and per-partition committed offset, end offset and lag."""
    try:
        info = admin.describe_consumer_groups([group_id], request_timeout=_TIMEOUT)[group_id].result(
            timeout=_TIMEOUT
        )
        offsets = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group_id)], request_timeout=_TIMEOUT
        )[group_id].result(timeout=_TIMEOUT)
    except KafkaException as exc:
        raise EvstreamError(f"cannot describe consumer group {group_id!r}: {exc}") from exc
    state = _name(info.state)
    committed = {
        (tp.topic, tp.partition): tp.offset for tp in offsets.topic_partitions or [] if tp.offset is not None
    }
    if state in ("DEAD", "UNKNOWN") and not committed and not info.members:
        raise EvstreamError(f"no consumer group {group_id!r} (state {state}); see `evstream groups list`")
    members, owner = [], {}
    for member in info.members:
        assigned = [(tp.topic, tp.partition) for tp in (member.assignment.topic_partitions or [])]
        members.append(
            {
                "member_id": member.member_id,
                "client_id": member.client_id,
                "host": member.host,
                "assignment": [f"{t}[{p}]" for t, p in sorted(assigned)],
            }
        )
        owner.update({tp: member.member_id for tp in assigned})
    keys = sorted(set(committed) | set(owner))
    ends: dict[tuple[str, int], int] = {}
    if keys:
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]  # untyped in confluent-kafka
        requests = {TopicPartition(t, p): latest for t, p in keys}
        try:
            for tp, future in admin.list_offsets(requests, request_timeout=_TIMEOUT).items():
                ends[(tp.topic, tp.partition)] = future.result(timeout=_TIMEOUT).offset
        except KafkaException as exc:
            raise EvstreamError(f"cannot read end offsets for group {group_id!r}: {exc}") from exc
    partitions = []
    for key in keys:
        done = committed.get(key)
        done = done if done is not None and done >= 0 else None
        end = ends.get(key, 0)
        partitions.append(
            PartitionLag(key[0], key[1], done, end, end - done if done is not None else None, owner.get(key))
        )
    return GroupDescription(
        group_id, state, str(info.coordinator.host) + f":{info.coordinator.port}", members, partitions
    )
