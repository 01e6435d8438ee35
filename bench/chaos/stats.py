"""Numbers that describe a chaos run: what was expected and recorded, what chaos
did, and how fast runs moved on after their agent died."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bench.chaos.actions import AGENT_KINDS, Action, Kind
from bench.chaos.checks import (
    Context,
    expected_downstream_runs,
    expected_occurrences,
    failed_runs,
    lost_attempts,
)
from bench.chaos.snapshot import RunRow

#: A newer run that started within this of a LOST may have been leased before it.
OVERTAKE_MARGIN = timedelta(milliseconds=500)


@dataclass(frozen=True, kw_only=True)
class Stats:
    """The numbers of the table."""

    occurrences_expected: int
    runs: int
    succeeded: int
    failed: int
    skipped: int
    duplicates: int
    missing: int
    lost_attempts: int
    retried_runs: int
    actions: dict[str, int]
    #: Retries after a LOST attempt that newer occurrences of their task overtook
    #: (their first attempt started after the LOST, before the retry).
    retries_overtaken: int
    #: Seconds from an agent's death (SIGKILL/SIGSTOP) to its runs' next attempt elsewhere.
    failover_seconds: list[float]

    @property
    def failover_median(self) -> float | None:
        """Median failover time, if any run failed over."""
        return statistics.median(self.failover_seconds) if self.failover_seconds else None

    @property
    def failover_max(self) -> float | None:
        """Longest failover time, if any run failed over."""
        return max(self.failover_seconds) if self.failover_seconds else None

    def to_json(self) -> dict[str, Any]:
        """The numbers as JSON."""
        return {
            "occurrences_expected": self.occurrences_expected,
            "runs": self.runs,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "skipped": self.skipped,
            "duplicates": self.duplicates,
            "missing_occurrences": self.missing,
            "lost_attempts": self.lost_attempts,
            "retried_runs": self.retried_runs,
            "retries_overtaken": self.retries_overtaken,
            "actions": self.actions,
            "failover_seconds": {
                "count": len(self.failover_seconds),
                "median": self.failover_median,
                "max": self.failover_max,
            },
        }


def compute(context: Context) -> Stats:
    """The numbers of a finished run."""
    runs = context.snapshot.all_runs()
    states = Counter(run.state for run in runs)
    expected, missing = _occurrence_counts(context)
    return Stats(
        occurrences_expected=expected,
        runs=len(runs),
        succeeded=states["SUCCEEDED"],
        failed=len(failed_runs(context.snapshot)),
        skipped=states["SKIPPED"],
        duplicates=sum(count - 1 for _, _, count in context.snapshot.duplicate_pairs),
        missing=missing,
        lost_attempts=sum(1 for _ in lost_attempts(context.snapshot)),
        retried_runs=sum(1 for run in runs if len(run.attempts) > 1),
        actions={kind.value: sum(a.kind is kind for a in context.actions) for kind in Kind},
        retries_overtaken=_overtaken(context),
        failover_seconds=_failovers(context.actions, runs),
    )


def _occurrence_counts(context: Context) -> tuple[int, int]:
    """Occurrences that must have a run (cron and dependency), and those without one."""
    expected = missing = 0
    for task in context.workload.cron_names:
        occurrences = expected_occurrences(context, task)
        have = {run.occurrence for run in context.snapshot.runs.get(task, [])}
        expected += len(occurrences)
        missing += sum(o not in have for o in occurrences)
    for downstream, upstreams in context.workload.upstreams.items():
        expected += expected_downstream_runs(context.snapshot, downstream, upstreams)
    return expected, missing


def _failovers(actions: list[Action], runs: list[RunRow]) -> list[float]:
    """For each attempt running on an agent when it was killed or stopped and LOST,
    the seconds until the run's next attempt started on another agent."""
    seconds = []
    for action in actions:
        if action.kind not in AGENT_KINDS:
            continue
        for run in runs:
            for attempt, following in zip(run.attempts, run.attempts[1:], strict=False):
                ended = attempt.finished_at
                if (
                    attempt.agent_id == action.target != following.agent_id
                    and attempt.state == "LOST"
                    and attempt.started_at <= action.at
                    and (ended is None or ended >= action.at)
                ):
                    seconds.append((following.started_at - action.at).total_seconds())
    return sorted(seconds)


def _overtaken(context: Context) -> int:
    """Retries after a LOST attempt that a newer occurrence of the task started before
    (README: the run is retried at once; runs start in occurrence order)."""
    count = 0
    for runs in context.snapshot.runs.values():
        firsts = [(run.occurrence, run.attempts[0].started_at) for run in runs if run.attempts]
        for run in runs:
            for lost, retry in zip(run.attempts, run.attempts[1:], strict=False):
                if lost.state != "LOST" or lost.finished_at is None:
                    continue
                since = lost.finished_at + OVERTAKE_MARGIN
                count += any(
                    occurrence > run.occurrence and since < started < retry.started_at
                    for occurrence, started in firsts
                )
    return count
