"""Replay: offset-reset plans (plan, re-check, apply), bounded replays, dead-letter redrive."""

from evstream.consumers.replay.apply import ApplyResult, apply_plan, recheck
from evstream.consumers.replay.bounded import BoundedReplay, ReplayResult
from evstream.consumers.replay.cluster import Cluster, GroupState
from evstream.consumers.replay.deadletters import DeadLetterRecord, read_dead_letters
from evstream.consumers.replay.plan import PartitionPlan, ReplayPlan, Target, plan_replay
from evstream.consumers.replay.redrives import RedriveResult, redrive

__all__ = [
    "ApplyResult",
    "BoundedReplay",
    "Cluster",
    "DeadLetterRecord",
    "GroupState",
    "PartitionPlan",
    "RedriveResult",
    "ReplayPlan",
    "ReplayResult",
    "Target",
    "apply_plan",
    "plan_replay",
    "read_dead_letters",
    "recheck",
    "redrive",
]
