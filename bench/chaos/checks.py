"""The checks of a chaos run, on what PostgreSQL recorded (the state machines and
guarantees of docs/architecture.md).

Each check returns its violations as sentences naming the task, occurrence,
run and attempt, so that a failure can be looked up in the logs and the database.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bench.chaos.actions import AGENT_KINDS, Action, Kind, ProcessExit
from bench.chaos.snapshot import (
    BROKEN_STATES,
    TERMINAL_STATES,
    AttemptRow,
    RunRow,
    Snapshot,
)
from bench.chaos.workload import Workload
from hydra.coordinator import schedule

#: Which action explains a LOST attempt best, when several overlap it.
EXPLANATION_ORDER = (Kind.KILL_AGENT, Kind.STOP_AGENT, Kind.RESTART_POSTGRES, Kind.KILL_COORDINATOR)
#: Attempts of one run may appear to overlap by this much (clock reads on two paths).
CLOCK_TOLERANCE = timedelta(milliseconds=100)


@dataclass(frozen=True, kw_only=True)
class Timeline:
    """When the phases of the run happened (wall clock, same host as the database)."""

    applied: tuple[datetime, datetime]
    #: Everything chaos took down was back.
    chaos_ended: datetime
    #: Task name -> when its pause was acknowledged.
    paused: dict[str, datetime]


@dataclass(frozen=True, kw_only=True)
class Context:
    """Everything the checks look at."""

    snapshot: Snapshot
    workload: Workload
    actions: list[Action]
    exits: list[ProcessExit]
    timeline: Timeline
    slack: timedelta


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """The outcome of one check."""

    number: int
    title: str
    violations: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """No violation."""
        return not self.violations


Check = Callable[[Context], CheckResult]


def run_all(context: Context) -> list[CheckResult]:
    """Every check, in order."""
    return [check(context) for check in CHECKS]


# --- 1: occurrences --------------------------------------------------------------------


def check_occurrences(context: Context) -> CheckResult:
    """1. Every cron task has one run per occurrence, with no gap, from the apply
    until after the chaos ended."""
    violations = [
        f"{task} {occurrence.isoformat()}: {count} runs for one occurrence"
        for task, occurrence, count in context.snapshot.duplicate_pairs
    ]
    for task in context.workload.cron_names:
        violations += _occurrence_gaps(context, task)
    return CheckResult(number=1, title="occurrences consecutive and unique", violations=violations)


def expected_occurrences(context: Context, task: str) -> list[datetime]:
    """The occurrences of `task` from its first run to its last."""
    runs = context.snapshot.runs.get(task, [])
    if not runs:
        return []
    cron = context.snapshot.crons[task]
    return list(schedule.occurrences(cron, runs[0].occurrence, runs[-1].occurrence))


def _occurrence_gaps(context: Context, task: str) -> list[str]:
    runs = context.snapshot.runs.get(task, [])
    if not runs:
        return [f"{task}: no run at all"]
    actual = [run.occurrence for run in runs]
    expected = expected_occurrences(context, task)
    problems = [
        f"{task}: occurrence {o.isoformat()} has no run" for o in _missing(expected, actual)
    ]
    problems += [
        f"{task}: run for {o.isoformat()}, not an occurrence" for o in set(actual) - set(expected)
    ]
    problems += [f"{task}: run {r.id} was caused by {r.cause!r}" for r in runs if r.cause != "cron"]
    return problems + _span_problems(context, task, actual[0], runs[-1])


def _span_problems(context: Context, task: str, first: datetime, last_run: RunRow) -> list[str]:
    """The runs start with the apply, go on after the chaos, and none is created after
    the pause (a run is created and leased up to 50 ms before its occurrence, so one
    for an occurrence just after the pause may have been created before it)."""
    last = last_run.occurrence
    timeline = context.timeline
    first_due = schedule.next_fire(context.snapshot.crons[task], timeline.applied[1])
    problems = []
    if first_due is not None and first > first_due:
        problems.append(
            f"{task}: first run is for {first.isoformat()}, but {first_due.isoformat()} "
            "was due after the apply"
        )
    if last < timeline.chaos_ended:
        problems.append(
            f"{task}: last run is for {last.isoformat()}, before the chaos ended at "
            f"{timeline.chaos_ended.isoformat()}: it stopped firing"
        )
    paused = timeline.paused.get(task)
    if paused is not None and last_run.created_at > paused:
        problems.append(
            f"{task}: a run for {last.isoformat()} created at "
            f"{last_run.created_at.isoformat()}, after its pause at {paused.isoformat()}"
        )
    return problems


def _missing(expected: list[datetime], actual: list[datetime]) -> list[datetime]:
    have = set(actual)
    return [o for o in expected if o not in have]


# --- 2: at most one success ---------------------------------------------------------------


def check_one_success(context: Context) -> CheckResult:
    """2. No run has two SUCCEEDED attempts; a SUCCEEDED run has exactly one, its
    last; its outputs come from that attempt."""
    writers = set(context.workload.output_writers)
    violations: list[str] = []
    for run in context.snapshot.all_runs():
        violations += _success_problems(run, check_outputs=run.task in writers)
    return CheckResult(number=2, title="at most one success per run", violations=violations)


def _success_problems(run: RunRow, *, check_outputs: bool) -> list[str]:
    succeeded = [a for a in run.attempts if a.state == "SUCCEEDED"]
    where = _where(run)
    if len(succeeded) > 1:
        return [f"{where}: {len(succeeded)} SUCCEEDED attempts {[a.number for a in succeeded]}"]
    if run.state != "SUCCEEDED":
        if succeeded:
            return [f"{where}: run is {run.state} but attempt {succeeded[0].number} SUCCEEDED"]
        return []
    if not succeeded:
        return [f"{where}: run SUCCEEDED without a SUCCEEDED attempt"]
    last = run.attempts[-1]
    if succeeded[0] is not last:
        return [f"{where}: attempt {succeeded[0].number} SUCCEEDED but {last.number} came after"]
    counted = (run.outputs or {}).get("attempt")
    if check_outputs and counted != last.number:
        return [f"{where}: outputs written by attempt {counted}, but attempt {last.number} counted"]
    return []


# --- 3: fencing tokens ---------------------------------------------------------------------


def check_tokens(context: Context) -> CheckResult:
    """3. Within a run, attempts are numbered 1..n, their tokens strictly increase and
    they do not overlap; tokens are unique cluster-wide; the last attempt's token is
    the run's."""
    violations = [
        f"lease token {token} is carried by more than one attempt"
        for token in context.snapshot.shared_tokens
    ]
    for run in context.snapshot.all_runs():
        violations += _token_problems(run)
    return CheckResult(number=3, title="no stale-token attempt", violations=violations)


def _token_problems(run: RunRow) -> list[str]:
    where = _where(run)
    numbers = [a.number for a in run.attempts]
    problems = []
    if numbers != list(range(1, len(numbers) + 1)) or run.attempts_used != len(numbers):
        problems.append(f"{where}: attempts {numbers}, attempts_used {run.attempts_used}")
    if len(numbers) > run.max_attempts:
        problems.append(f"{where}: {len(numbers)} attempts, max_attempts {run.max_attempts}")
    for earlier, later in zip(run.attempts, run.attempts[1:], strict=False):
        problems += _pair_problems(where, earlier, later)
    last = run.last_attempt
    if (
        last is not None
        and run.state in ("SUCCEEDED", "FAILED")
        and last.lease_token != run.lease_token
    ):
        problems.append(
            f"{where}: run ended under lease {run.lease_token}, "
            f"its last attempt {last.number} under {last.lease_token}"
        )
    return problems


def _pair_problems(where: str, earlier: AttemptRow, later: AttemptRow) -> list[str]:
    problems = []
    if later.lease_token <= earlier.lease_token:
        problems.append(
            f"{where}: attempt {later.number} has token {later.lease_token}, not above "
            f"attempt {earlier.number}'s {earlier.lease_token}"
        )
    if earlier.state == "RUNNING" or earlier.finished_at is None:
        problems.append(f"{where}: attempt {earlier.number} is still RUNNING after a retry")
    elif earlier.finished_at > later.started_at + CLOCK_TOLERANCE:
        problems.append(
            f"{where}: attempt {earlier.number} ended at {earlier.finished_at.isoformat()}, "
            f"after attempt {later.number} started at {later.started_at.isoformat()}"
        )
    return problems


# --- 4: everything ended ---------------------------------------------------------------------


def check_terminal(context: Context) -> CheckResult:
    """4. After settling, every run is SUCCEEDED, FAILED, CANCELLED or SKIPPED, and
    no attempt is RUNNING."""
    violations = []
    for run in context.snapshot.all_runs():
        if run.state not in TERMINAL_STATES:
            violations.append(f"{_where(run)}: still {run.state}")
        violations += [
            f"{_where(run)}: attempt {a.number} on {a.agent_id} is still RUNNING"
            for a in run.attempts
            if a.state == "RUNNING"
        ]
    return CheckResult(number=4, title="every run terminal", violations=violations)


# --- 5: LOST attempts line up with chaos ----------------------------------------------------


def check_lost(context: Context) -> CheckResult:
    """5. Every LOST attempt lines up with a chaos action: its agent killed or stopped,
    a coordinator killed, or PostgreSQL restarted, during the attempt (less slack)."""
    violations = []
    explained: Counter[str] = Counter()
    for run, attempt in lost_attempts(context.snapshot):
        cause = explaining_action(context, attempt)
        if cause is None:
            violations.append(
                f"{_where(run)}: attempt {attempt.number} on {attempt.agent_id} LOST "
                f"({_span(attempt)}) with no chaos action to explain it: {attempt.message}"
            )
        else:
            explained[cause.kind.value] += 1
    notes = [f"{count} LOST attempt(s) during {kind}" for kind, count in sorted(explained.items())]
    return CheckResult(
        number=5, title="every LOST explained by chaos", violations=violations, notes=notes
    )


def lost_attempts(snapshot: Snapshot) -> Iterable[tuple[RunRow, AttemptRow]]:
    """Every LOST attempt, with its run."""
    return ((run, a) for run in snapshot.all_runs() for a in run.attempts if a.state == "LOST")


def explaining_action(context: Context, attempt: AttemptRow) -> Action | None:
    """The action whose disruption overlaps [started_at - slack, finished_at]: one on
    the attempt's own agent if any, else a PostgreSQL restart, else a coordinator kill."""
    begin = attempt.started_at - context.slack
    end = attempt.finished_at or datetime.max.replace(tzinfo=attempt.started_at.tzinfo)
    overlapping = [
        action
        for action in context.actions
        if action.at <= end
        and (action.restored_at or end) >= begin
        and (action.kind not in AGENT_KINDS or action.target == attempt.agent_id)
    ]
    return min(overlapping, key=lambda action: EXPLANATION_ORDER.index(action.kind), default=None)


# --- 6: dependencies ---------------------------------------------------------------------------


def check_dependencies(context: Context) -> CheckResult:
    """6. A downstream has one run where all its upstreams succeeded, a SKIPPED run where
    one ended FAILED/CANCELLED/SKIPPED, and none where they did not all finish."""
    violations = []
    for downstream, upstreams in context.workload.upstreams.items():
        for occurrence in _dependency_occurrences(context.snapshot, downstream, upstreams):
            violations += _dependency_problems(context.snapshot, downstream, upstreams, occurrence)
    return CheckResult(number=6, title="dependencies resolved exactly", violations=violations)


def expected_downstream_runs(snapshot: Snapshot, downstream: str, upstreams: list[str]) -> int:
    """Occurrences at which `downstream` must have a run."""
    return sum(
        _upstream_verdict(snapshot, upstreams, o) != "waiting"
        for o in _dependency_occurrences(snapshot, downstream, upstreams)
    )


def _dependency_occurrences(
    snapshot: Snapshot, downstream: str, upstreams: list[str]
) -> list[datetime]:
    tasks = [downstream, *upstreams]
    return sorted({run.occurrence for task in tasks for run in snapshot.runs.get(task, [])})


def _upstream_verdict(snapshot: Snapshot, upstreams: list[str], occurrence: datetime) -> str:
    """``succeeded`` (all), ``broken`` (one failed, was cancelled or skipped), or ``waiting``."""
    states = [[r.state for r in snapshot.run_at(u, occurrence)] for u in upstreams]
    if any(s and s[0] in BROKEN_STATES for s in states):
        return "broken"
    if all(s and s[0] == "SUCCEEDED" for s in states):
        return "succeeded"
    return "waiting"


def _dependency_problems(
    snapshot: Snapshot, downstream: str, upstreams: list[str], occurrence: datetime
) -> list[str]:
    verdict = _upstream_verdict(snapshot, upstreams, occurrence)
    runs = snapshot.run_at(downstream, occurrence)
    where = f"{downstream} {occurrence.isoformat()}"
    if verdict == "waiting":
        if runs:
            return [f"{where}: a run although its upstreams {upstreams} did not all finish"]
        return []
    if len(runs) != 1:
        return [f"{where}: {len(runs)} runs; upstreams {verdict}, one expected"]
    run = runs[0]
    if run.cause != "after":
        return [f"{where}: run {run.id} caused by {run.cause!r}"]
    if verdict == "broken" and run.state != "SKIPPED":
        return [f"{where}: run is {run.state}, but an upstream ended badly: SKIPPED expected"]
    if verdict == "succeeded" and run.state == "SKIPPED":
        return [f"{where}: run SKIPPED ({run.reason}) although every upstream succeeded"]
    return []


# --- 7: failures -------------------------------------------------------------------------------


def check_failures(context: Context) -> CheckResult:
    """7. Runs FAILED only by running out of attempts, all LOST to chaos; no attempt
    failed otherwise (every command of the workload succeeds)."""
    violations = []
    for run in context.snapshot.all_runs():
        where = _where(run)
        for attempt in run.attempts:
            if attempt.state not in ("SUCCEEDED", "LOST", "RUNNING"):  # RUNNING: check 4
                violations.append(
                    f"{where}: attempt {attempt.number} on {attempt.agent_id} ended "
                    f"{attempt.state} (exit {attempt.exit_code}): {attempt.message}"
                )
        if run.state == "FAILED":
            violations += _failed_run_problems(context, run)
    reasons = Counter(failure_kind(run.reason) for run in failed_runs(context.snapshot))
    notes = [f"{count} FAILED: {reason}" for reason, count in reasons.most_common()]
    return CheckResult(
        number=7, title="FAILED runs only from chaos", violations=violations, notes=notes
    )


def failed_runs(snapshot: Snapshot) -> list[RunRow]:
    """Every FAILED run."""
    return [run for run in snapshot.all_runs() if run.state == "FAILED"]


def failure_kind(reason: str) -> str:
    """A run's failure reason without its numbers and ids, to group by."""
    reason = re.sub(r"agent \S+", "agent <id>", reason)
    return re.sub(r"\d+", "<n>", reason)


def _failed_run_problems(context: Context, run: RunRow) -> list[str]:
    where = _where(run)
    if len(run.attempts) < run.max_attempts:
        return [f"{where}: FAILED after {len(run.attempts)} of {run.max_attempts} attempts"]
    unexplained = [
        a.number
        for a in run.attempts
        if a.state == "LOST" and explaining_action(context, a) is None
    ]
    if unexplained:
        return [f"{where}: FAILED from LOST attempts {unexplained} that no action explains"]
    return []


# --- 8: processes ----------------------------------------------------------------------------


def check_processes(context: Context) -> CheckResult:
    """8. No coordinator or agent exited unless killed (a coordinator may fail to
    start while PostgreSQL is down; it is started again)."""
    violations, notes = [], []
    for ended in context.exits:
        line = f"{ended.name} exited with {ended.exit_code} at {ended.at.isoformat()}"
        if ended.postgres_down:
            notes.append(f"{line}, PostgreSQL being down")
        else:
            violations.append(f"{line}:\n{_indent(ended.log_tail)}")
    return CheckResult(
        number=8, title="no process died by itself", violations=violations, notes=notes
    )


# --- helpers -------------------------------------------------------------------------------


def _where(run: RunRow) -> str:
    return f"{run.task} {run.occurrence.isoformat()} (run {run.id})"


def _span(attempt: AttemptRow) -> str:
    end = attempt.finished_at.isoformat() if attempt.finished_at else "never"
    return f"{attempt.started_at.isoformat()} to {end}"


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())


CHECKS: tuple[Check, ...] = (
    check_occurrences,
    check_one_success,
    check_tokens,
    check_terminal,
    check_lost,
    check_dependencies,
    check_failures,
    check_processes,
)
