"""Replay plans: per partition, the group's committed offset, the target, what would be replayed.

A plan is data (:class:`ReplayPlan`, JSON round trip) so it can be reviewed, stored and applied
later; :func:`apply_plan` re-checks it against the cluster before touching anything.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from evstream.consumers.replay.cluster import Cluster, Key
from evstream.errors import ReplayInputError

__all__ = [
    "PartitionPlan",
    "ReplayPlan",
    "Target",
    "epoch_ms",
    "parse_datetime",
    "parse_duration",
    "plan_replay",
]

TargetKind = Literal["earliest", "latest", "offset", "datetime", "duration", "shift"]
_DURATION: TypeAdapter[timedelta] = TypeAdapter(timedelta)


def parse_datetime(text: str) -> datetime:
    """ISO-8601 with a timezone (``2026-11-27T10:00:00Z``); :class:`ReplayInputError` otherwise."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ReplayInputError(f"not an ISO-8601 datetime: {text!r} (e.g. 2026-11-27T10:00:00Z)") from None
    if value.tzinfo is None:
        raise ReplayInputError(f"datetime {text!r} needs a timezone, e.g. {text}Z or {text}+01:00")
    return value


def epoch_ms(at: datetime) -> int:
    """``at`` in epoch milliseconds, rounded up: records stamped in that millisecond or later."""
    whole, rest = divmod(at - datetime(1970, 1, 1, tzinfo=UTC), timedelta(milliseconds=1))
    return int(whole) + (1 if rest else 0)


def parse_duration(text: str) -> timedelta:
    """ISO-8601 duration (``PT1H``, ``P1DT12H``); :class:`ReplayInputError` otherwise."""
    try:
        value = _DURATION.validate_python(text)
    except ValidationError:
        raise ReplayInputError(f"not an ISO-8601 duration: {text!r} (e.g. PT1H, P2D)") from None
    if value <= timedelta(0):
        raise ReplayInputError(f"duration {text!r} must be positive")
    return value


class Target(BaseModel):
    """Where to move the group: ``--to-earliest``, ``--to-offset 42``, ``--to-datetime ...``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: TargetKind
    value: str | int | None = None

    def __str__(self) -> str:
        flag = {"duration": "--by-duration", "shift": "--shift-by"}.get(self.kind, f"--to-{self.kind}")
        return flag if self.value is None else f"{flag} {self.value}"


class PartitionPlan(BaseModel):
    """One partition: committed offset now (None: never committed), target, retained range."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str
    partition: int = Field(ge=0)
    current: int | None = Field(ge=0)
    target: int = Field(ge=0)
    earliest: int = Field(ge=0)
    end: int = Field(ge=0)

    @property
    def replayed(self) -> int:
        """Records the group will read again (or, without a committed offset, read at all)."""
        start = self.current if self.current is not None else self.end
        return max(0, start - self.target) if self.current is not None else self.end - self.target

    @property
    def skipped(self) -> int:
        """Records the group will never read (the target is past its committed offset)."""
        return max(0, self.target - self.current) if self.current is not None else 0


class ReplayPlan(BaseModel):
    """A reviewed offset reset for one group on one topic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    group_id: str = Field(min_length=1)
    topic: str = Field(min_length=1)
    target: Target
    created_at: datetime
    partitions: list[PartitionPlan] = Field(min_length=1)

    @property
    def replayed(self) -> int:
        return sum(p.replayed for p in self.partitions)

    @property
    def skipped(self) -> int:
        return sum(p.skipped for p in self.partitions)

    def targets(self) -> dict[Key, int]:
        return {(p.topic, p.partition): p.target for p in self.partitions}

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ReplayPlan:
        """Read a plan file; :class:`ReplayInputError` naming the problem if it is not one."""
        try:
            return cls.model_validate_json(path.read_text())
        except OSError as exc:
            raise ReplayInputError(f"cannot read plan file {path}: {exc.strerror}") from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "(file)"
            raise ReplayInputError(f"{path} is not a replay plan: {where}: {first['msg']}") from None


def plan_replay(
    cluster: Cluster,
    group_id: str,
    topic: str,
    target: Target,
    *,
    partitions: list[int] | None = None,
    allow_new_group: bool = False,
    now: datetime | None = None,
) -> ReplayPlan:
    """Work out, per partition, where ``target`` puts ``group_id`` on ``topic``. Changes nothing."""
    now = now or datetime.now(UTC)
    state = cluster.group(group_id)
    if not state.known and not allow_new_group:
        raise ReplayInputError(
            f"no consumer group {group_id!r} (see `evstream groups list`); "
            "pass --allow-new-group to position a group that has not consumed yet"
        )
    available = cluster.partitions(topic)
    chosen = partitions or available
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise ReplayInputError(
            f"topic {topic!r} has no partition {unknown[0]} (it has 0..{len(available) - 1})"
        )
    keys = [(topic, p) for p in sorted(set(chosen))]
    earliest, end = cluster.earliest(keys), cluster.latest(keys)
    targets = _targets(cluster, state.committed, keys, earliest, end, target, now)
    return ReplayPlan(
        group_id=group_id,
        topic=topic,
        target=target,
        created_at=now,
        partitions=[
            PartitionPlan(
                topic=t,
                partition=p,
                current=state.committed.get((t, p)),
                target=targets[(t, p)],
                earliest=earliest[(t, p)],
                end=end[(t, p)],
            )
            for t, p in keys
        ],
    )


def _targets(
    cluster: Cluster,
    committed: dict[Key, int],
    keys: list[Key],
    earliest: dict[Key, int],
    end: dict[Key, int],
    target: Target,
    now: datetime,
) -> dict[Key, int]:
    kind, value = target.kind, target.value
    if kind == "earliest":
        return dict(earliest)
    if kind == "latest":
        return dict(end)
    if kind == "offset":
        offset = int(value or 0)
        for key in keys:
            if offset > end[key]:
                raise ReplayInputError(
                    f"offset {offset} is past the end of {key[0]}[{key[1]}] (end {end[key]})"
                )
            if offset < earliest[key]:
                raise ReplayInputError(
                    f"offset {offset} of {key[0]}[{key[1]}] was deleted by retention"
                    f" (earliest {earliest[key]})"
                )
        return dict.fromkeys(keys, offset)
    if kind in ("datetime", "duration"):
        at = parse_datetime(str(value)) if kind == "datetime" else now - parse_duration(str(value))
        if at > now:
            raise ReplayInputError(
                f"{at.isoformat()} is in the future (now {now.isoformat(timespec='seconds')})"
            )
        return cluster.for_time(keys, epoch_ms(at))
    shift = int(value or 0)  # shift: relative to the committed offset, kept inside the retained range
    missing = [k for k in keys if k not in committed]
    if missing:
        raise ReplayInputError(
            f"{missing[0][0]}[{missing[0][1]}] has no committed offset to shift from; use an absolute target"
        )
    return {k: min(max(committed[k] + shift, earliest[k]), end[k]) for k in keys}
