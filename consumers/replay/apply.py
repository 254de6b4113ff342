"""Apply a replay plan: refuse while the group has members, re-check, alter, read back."""

from __future__ import annotations

from dataclasses import dataclass, field

from evstream.consumers.replay.cluster import Cluster, Key
from evstream.consumers.replay.plan import ReplayPlan
from evstream.errors import GroupActiveError, StalePlanError

__all__ = ["ApplyResult", "apply_plan", "recheck"]


@dataclass
class ApplyResult:
    """What :func:`apply_plan` did: ``applied`` is False for a dry run."""

    plan: ReplayPlan
    applied: bool
    notes: list[str] = field(default_factory=list)  # harmless changes since the plan (new records)
    committed: dict[Key, int] = field(default_factory=dict)  # read back after applying


def recheck(cluster: Cluster, plan: ReplayPlan) -> list[str]:
    """Compare the plan with the cluster now. Breaking changes raise :class:`StalePlanError`;
    harmless ones (records appended since) come back as notes."""
    state = cluster.group(plan.group_id)
    if state.members:
        raise GroupActiveError(plan.group_id, state.members)
    keys = [(p.topic, p.partition) for p in plan.partitions]
    earliest, end = cluster.earliest(keys), cluster.latest(keys)
    breaking, notes = [], []
    for p in plan.partitions:
        key, name = (p.topic, p.partition), f"{p.topic}[{p.partition}]"
        now = state.committed.get(key)
        if now != p.current:
            breaking.append(f"{name}: committed offset moved {p.current} -> {now}")
        if earliest[key] > p.target:
            breaking.append(f"{name}: retention deleted up to {earliest[key]}, past the target {p.target}")
        if end[key] < p.target:
            breaking.append(f"{name}: the end offset is now {end[key]}, before the target {p.target}")
        elif end[key] > p.end:
            notes.append(f"{name}: {end[key] - p.end} record(s) appended since the plan")
    if breaking:
        raise StalePlanError(breaking)
    return notes


def apply_plan(cluster: Cluster, plan: ReplayPlan, *, dry_run: bool = False) -> ApplyResult:
    """Move the group's committed offsets to the plan's targets (nothing changes on a dry run)."""
    notes = recheck(cluster, plan)
    if dry_run:
        return ApplyResult(plan, applied=False, notes=notes)
    cluster.alter(plan.group_id, plan.targets())
    after = cluster.group(plan.group_id).committed
    return ApplyResult(
        plan, applied=True, notes=notes, committed={k: after[k] for k in plan.targets() if k in after}
    )
