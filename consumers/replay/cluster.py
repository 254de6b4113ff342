"""What replay needs to know from the cluster, read through the Admin API with typed errors."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from evstream.errors import ReplayError, ReplayInputError

__all__ = ["Cluster", "GroupState"]

_TIMEOUT = 30.0
Key = tuple[str, int]


@dataclass(frozen=True)
class GroupState:
    """A group's state, its live members (``client_id@host (member_id)``) and committed offsets."""

    group_id: str
    state: str
    members: list[str]
    committed: dict[Key, int]

    @property
    def known(self) -> bool:
        return bool(self.committed or self.members) or self.state not in ("DEAD", "UNKNOWN")


class Cluster:
    """Admin API calls used by plans, apply and bounded replays. No I/O until a method is called."""

    def __init__(self, admin: AdminClient) -> None:
        self.admin = admin

    def partitions(self, topic: str) -> list[int]:
        """The partition numbers of ``topic``; :class:`ReplayInputError` if it does not exist."""
        try:
            found = self.admin.list_topics(topic, timeout=_TIMEOUT).topics.get(topic)
        except KafkaException as exc:
            raise ReplayError(f"cannot read metadata of topic {topic!r}: {exc}") from exc
        if found is None or found.error is not None or not found.partitions:
            raise ReplayInputError(f"no topic {topic!r}; see `evstream topics list`")
        return sorted(found.partitions)

    def existing(self, topics: Iterable[str]) -> set[str]:
        """Those of ``topics`` that exist (one metadata request)."""
        try:
            found = self.admin.list_topics(timeout=_TIMEOUT).topics
        except KafkaException as exc:
            raise ReplayError(f"cannot read the cluster's topic metadata: {exc}") from exc
        return {t for t in topics if t in found and found[t].error is None}

    def group(self, group_id: str) -> GroupState:
        try:
            info = self.admin.describe_consumer_groups([group_id], request_timeout=_TIMEOUT)[group_id].result(
                timeout=_TIMEOUT
            )
            offsets = self.admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group_id)], request_timeout=_TIMEOUT
            )[group_id].result(timeout=_TIMEOUT)
        except KafkaException as exc:
            raise ReplayError(f"cannot describe consumer group {group_id!r}: {exc}") from exc
        committed = {
            (tp.topic, tp.partition): tp.offset
            for tp in offsets.topic_partitions or []
            if tp.offset is not None and tp.offset >= 0
        }
        members = [f"{m.client_id}@{m.host} ({m.member_id})" for m in info.members]
        return GroupState(group_id, str(getattr(info.state, "name", info.state)), members, committed)

    def offsets(self, keys: Iterable[Key], spec: OffsetSpec) -> dict[Key, int]:
        """``list_offsets`` for each partition (earliest, latest or for a timestamp)."""
        requests = {TopicPartition(t, p): spec for t, p in keys}
        if not requests:
            return {}
        try:
            return {
                (tp.topic, tp.partition): future.result(timeout=_TIMEOUT).offset
                for tp, future in self.admin.list_offsets(requests, request_timeout=_TIMEOUT).items()
            }
        except KafkaException as exc:
            raise ReplayError(f"cannot list offsets: {exc}") from exc

    def earliest(self, keys: Iterable[Key]) -> dict[Key, int]:
        return self.offsets(keys, OffsetSpec.earliest())  # type: ignore[no-untyped-call]

    def latest(self, keys: Iterable[Key]) -> dict[Key, int]:
        return self.offsets(keys, OffsetSpec.latest())  # type: ignore[no-untyped-call]

    def for_time(self, keys: Iterable[Key], epoch_ms: int) -> dict[Key, int]:
        """The first offset whose timestamp is >= ``epoch_ms`` (the end offset when there is none)."""
        found = self.offsets(keys, OffsetSpec.for_timestamp(epoch_ms))
        missing = [k for k, offset in found.items() if offset < 0]
        if missing:
            found.update(self.latest(missing))
        return found

    def alter(self, group_id: str, targets: dict[Key, int]) -> None:
        request = ConsumerGroupTopicPartitions(
            group_id, [TopicPartition(t, p, o) for (t, p), o in targets.items()]
        )
        try:
            result = self.admin.alter_consumer_group_offsets([request], request_timeout=_TIMEOUT)
            altered = result[group_id].result(timeout=_TIMEOUT)
        except KafkaException as exc:
            raise ReplayError(f"cannot alter offsets of group {group_id!r}: {exc}") from exc
        failed = [f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in altered.topic_partitions if tp.error]
        if failed:
            raise ReplayError(f"offsets of group {group_id!r} not altered for {', '.join(failed)}")
