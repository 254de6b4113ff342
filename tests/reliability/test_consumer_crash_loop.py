"""A consumer killed with SIGKILL five times, each time within the 5 s commit interval.

Before issue 14 (defect 6) such a consumer never committed and so never made progress (38,703
handler calls for 20,000 events, one handled 6 times): offsets are now committed after the first
batch that finished a record, then every commit_interval_s or commit_every_records. Invariants:
no event missing; every kill moves the group's committed offsets forward; repeats are bounded
(without dedupe by what was handled since the last commit, with it by one per kill).
"""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections import Counter
from functools import partial
from pathlib import Path

import pytest

from tests.conftest import Endpoints, TopicFactory
from tests.consumer_helpers import consume_cmd, declare_failure_topics, publish, run_until_idle, worker_env
from tests.factories import mixed_events
from tests.helpers import wait_until
from tests.kafka_helpers import committed_offsets

KILLS = 5


def crash_loop(
    endpoints: Endpoints, topic: str, tmp_path: Path, repo_root: Path, count: int, *, dedupe: bool
) -> dict[str, object]:
    ids = {str(i) for i in publish(endpoints, topic, mixed_events(count, seed=61))}
    handled_file = tmp_path / "handled.txt"
    env = worker_env(
        endpoints,
        handled_file,
        EVSTREAM_TEST_HANDLER_WORK_S="0.002",
        EVSTREAM_CONSUMER_BATCH_SIZE="200",
        EVSTREAM_CONSUMER_SESSION_TIMEOUT_MS="60000",
        EVSTREAM_CONSUMER_GROUP_INSTANCE_ID="crash-looper",  # restarts take the partitions straight back
    )  # the default commit interval (5 s) and commit_every_records (1000)
    group = f"g-crash-{uuid.uuid4().hex[:8]}"
    declare_failure_topics(endpoints, group, topic)
    extra = ("--dedupe", str(tmp_path / "dedupe.db")) if dedupe else ()
    cmd = consume_cmd(group, topic, *extra)

    def lines() -> list[str]:
        return handled_file.read_text().splitlines() if handled_file.exists() else []

    def handled_since(start: int) -> bool:
        return len(lines()) - start >= 500

    progress: list[int] = []
    for _ in range(KILLS):
        before = len(lines())
        worker = subprocess.Popen(
            cmd, env=env, cwd=repo_root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:  # kill it well inside the 5 s commit interval, after a few batches
            wait_until(partial(handled_since, before), timeout=60, what="500 handled before the kill")
        finally:
            worker.kill()
            worker.wait(timeout=30)
        assert worker.returncode == -signal.SIGKILL
        progress.append(
            sum(max(o, 0) for o in committed_offsets(endpoints.bootstrap_servers, group, topic, 3))
        )
    final = run_until_idle(cmd, env, repo_root, 3)
    assert final.returncode == 0, final.stderr
    calls = Counter(line.split()[0] for line in lines())
    assert set(calls) == ids, f"missing: {len(ids - set(calls))}"  # nothing lost
    assert all(b > a for a, b in zip([0, *progress], progress, strict=False)), f"no progress: {progress}"
    repeats = sum(calls.values()) - len(ids)
    if dedupe:
        assert repeats <= KILLS, repeats  # at most the record in hand at each kill
    else:
        assert repeats <= KILLS * (1000 + 200 * 3), repeats  # what was handled since the last commit
    return {
        "events": len(ids),
        "calls": sum(calls.values()),
        "max_per_event": max(calls.values()),
        "committed_after_kills": progress,
    }


@pytest.mark.parametrize(
    "dedupe",
    [pytest.param(False, id="plain", marks=pytest.mark.long), pytest.param(True, id="dedupe")],
)  # make test runs the dedupe variant; make reliability both
def test_consumer_killed_five_times_within_the_commit_interval_makes_progress(
    endpoints: Endpoints,
    new_topic: TopicFactory,
    tmp_path: Path,
    repo_root: Path,
    dedupe: bool,
    figures: dict[str, object],
) -> None:
    figures.update(crash_loop(endpoints, new_topic(partitions=3), tmp_path, repo_root, 4000, dedupe=dedupe))


@pytest.mark.long
@pytest.mark.parametrize("dedupe", [False, True], ids=["plain", "dedupe"])
def test_consumer_crash_loop_over_20000_events(
    endpoints: Endpoints,
    new_topic: TopicFactory,
    tmp_path: Path,
    repo_root: Path,
    dedupe: bool,
    figures: dict[str, object],
) -> None:
    figures.update(crash_loop(endpoints, new_topic(partitions=3), tmp_path, repo_root, 20_000, dedupe=dedupe))
