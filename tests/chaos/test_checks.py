"""The chaos checks themselves: a clean record passes every check, and each kind of
broken record fails the check meant to catch it (so that a passing chaos run means
something)."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bench.chaos.actions import Action, Kind, ProcessExit
from bench.chaos.checks import Context, Timeline, run_all
from bench.chaos.snapshot import AttemptRow, RunRow, Snapshot
from bench.chaos.workload import WRITE_OUTPUT, Workload
from hydra.domain import Cron

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
EVERY_SECOND = Cron(expression="* * * * * *")
EVERY_TWO_SECONDS = Cron(expression="*/2 * * * * *")
WORKLOAD = Workload(
    specs=(
        {"name": "tick", "command": ["sh", "-c", "echo ok"], "triggers": [{"cron": "* * * * * *"}]},
        {"name": "a", "command": ["sh", "-c", "echo ok"], "triggers": [{"cron": "*/2 * * * * *"}]},
        {"name": "b", "command": ["sh", "-c", "echo ok"], "triggers": [{"after": ["a"]}]},
    )
)

Runs = dict[str, list[RunRow]]


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _attempt(
    run_id: str, number: int, token: int, start: float, state: str = "SUCCEEDED"
) -> AttemptRow:
    return AttemptRow(
        run_id=run_id,
        number=number,
        state=state,
        agent_id="agent-0",
        lease_token=token,
        started_at=_at(start),
        finished_at=_at(start + 0.5),
        exit_code=0 if state == "SUCCEEDED" else None,
        message="",
    )


def _run(task: str, second: int, token: int, cause: str = "cron") -> RunRow:
    run_id = f"{task}-{second}"
    return RunRow(
        id=run_id,
        task=task,
        occurrence=_at(second),
        created_at=_at(second - 0.05),  # created and leased ahead
        state="SUCCEEDED",
        reason="",
        cause=cause,
        lease_token=token,
        attempts_used=1,
        max_attempts=5,
        outputs=None,
        attempts=(_attempt(run_id, 1, token, second + 0.1),),
    )


def _clean_runs() -> Runs:
    tokens = itertools.count(1)
    return {
        "tick": [_run("tick", s, next(tokens)) for s in range(5)],
        "a": [_run("a", s, next(tokens)) for s in (0, 2, 4)],
        "b": [_run("b", s, next(tokens), cause="after") for s in (0, 2, 4)],
    }


def _context(
    runs: Runs, *, actions: list[Action] | None = None, exits: list[ProcessExit] | None = None
) -> Context:
    pairs = Counter((run.task, run.occurrence) for task_runs in runs.values() for run in task_runs)
    tokens = Counter(
        a.lease_token for task_runs in runs.values() for r in task_runs for a in r.attempts
    )
    snapshot = Snapshot(
        crons={"tick": EVERY_SECOND, "a": EVERY_TWO_SECONDS},
        runs={
            task: sorted(task_runs, key=lambda r: r.occurrence) for task, task_runs in runs.items()
        },
        duplicate_pairs=[(t, o, n) for (t, o), n in pairs.items() if n > 1],
        shared_tokens=[token for token, n in tokens.items() if n > 1],
    )
    return Context(
        snapshot=snapshot,
        workload=WORKLOAD,
        actions=actions or [],
        exits=exits or [],
        timeline=Timeline(
            applied=(_at(-0.5), _at(-0.4)),
            chaos_ended=_at(2.5),
            paused={"tick": _at(4.5), "a": _at(4.5)},
        ),
        slack=timedelta(seconds=5),
    )


def _failing(context: Context) -> list[int]:
    return [check.number for check in run_all(context) if not check.passed]


def _replace_run(runs: Runs, task: str, index: int, **changes: Any) -> None:
    runs[task][index] = dataclasses.replace(runs[task][index], **changes)


def _lost_then_retried(runs: Runs) -> None:
    """tick at 1 s: attempt 1 LOST on agent-0, attempt 2 SUCCEEDED."""
    run = runs["tick"][1]
    lost = dataclasses.replace(run.attempts[0], state="LOST", lease_token=100)
    retry = _attempt(run.id, 2, 101, 1.7)
    _replace_run(runs, "tick", 1, attempts=(lost, retry), attempts_used=2, lease_token=101)


def test_a_clean_record_passes_every_check() -> None:
    assert _failing(_context(_clean_runs())) == []


def _drop_occurrence(runs: Runs) -> None:
    del runs["tick"][2]


def _duplicate_occurrence(runs: Runs) -> None:
    again = _run("tick", 2, 100)
    runs["tick"].append(dataclasses.replace(again, id="tick-2-again"))


def _stop_firing_before_the_end(runs: Runs) -> None:
    del runs["tick"][3:]


def _lose_the_first_occurrence(runs: Runs) -> None:
    del runs["tick"][0]


def _fire_after_the_pause(runs: Runs) -> None:
    runs["tick"].append(_run("tick", 5, 100))  # created at 4.95 s, paused at 4.5 s


def test_a_run_created_before_the_pause_for_an_occurrence_after_it_passes() -> None:
    runs = _clean_runs()
    before_the_pause = dataclasses.replace(_run("tick", 5, 100), created_at=_at(4.45))
    runs["tick"].append(before_the_pause)
    assert 1 not in _failing(_context(runs))


def _two_successes(runs: Runs) -> None:
    run = runs["tick"][1]
    second = _attempt(run.id, 2, 100, 1.7)
    _replace_run(
        runs, "tick", 1, attempts=(*run.attempts, second), attempts_used=2, lease_token=100
    )


def _stale_token(runs: Runs) -> None:
    _lost_then_retried(runs)
    run = runs["tick"][1]
    stale = dataclasses.replace(run.attempts[1], lease_token=99)  # below attempt 1's 100
    _replace_run(runs, "tick", 1, attempts=(run.attempts[0], stale), lease_token=99)


def _run_ends_under_another_token(runs: Runs) -> None:
    _replace_run(runs, "tick", 0, lease_token=555)


def _shared_token(runs: Runs) -> None:
    run = runs["tick"][1]
    _replace_run(
        runs,
        "tick",
        1,
        attempts=(dataclasses.replace(run.attempts[0], lease_token=1),),
        lease_token=1,
    )


def _still_running(runs: Runs) -> None:
    run = runs["tick"][4]
    running = dataclasses.replace(run.attempts[0], state="RUNNING", finished_at=None)
    _replace_run(runs, "tick", 4, state="RUNNING", attempts=(running,))


def _downstream_missing(runs: Runs) -> None:
    del runs["b"][1]


def _downstream_not_skipped(runs: Runs) -> None:
    run = runs["a"][1]
    failed = dataclasses.replace(run.attempts[0], state="LOST")
    _replace_run(runs, "a", 1, state="FAILED", attempts=(failed,), max_attempts=1)


def _downstream_without_upstream(runs: Runs) -> None:
    runs["b"].append(_run("b", 6, 500, cause="after"))


def _attempt_failed(runs: Runs) -> None:
    run = runs["tick"][1]
    failed = dataclasses.replace(run.attempts[0], state="FAILED", exit_code=1)
    retry = _attempt(run.id, 2, 100, 1.7)
    _replace_run(runs, "tick", 1, attempts=(failed, retry), attempts_used=2, lease_token=100)


@pytest.mark.parametrize(
    ("corrupt", "failing"),
    [
        (_drop_occurrence, [1]),
        (_duplicate_occurrence, [1]),
        (_stop_firing_before_the_end, [1]),
        (_lose_the_first_occurrence, [1]),
        (_fire_after_the_pause, [1]),
        (_two_successes, [2]),
        (_stale_token, [3]),
        (_run_ends_under_another_token, [3]),
        (_shared_token, [3]),
        (_still_running, [4]),
        (_downstream_missing, [6]),
        (_downstream_without_upstream, [6]),
        (_attempt_failed, [7]),
    ],
)
def test_a_broken_record_fails_the_check_meant_for_it(
    corrupt: Callable[[Runs], None], failing: list[int]
) -> None:
    runs = _clean_runs()
    corrupt(runs)
    # PostgreSQL restarted throughout: a LOST attempt is never what these are about.
    outage = Action(kind=Kind.RESTART_POSTGRES, target="postgres", at=_at(-1), restored_at=_at(9))
    assert _failing(_context(runs, actions=[outage])) == failing


def test_a_downstream_of_a_failed_upstream_must_be_skipped() -> None:
    runs = _clean_runs()
    _downstream_not_skipped(runs)
    # The LOST attempt of `a` lines up with nothing: checks 5 and 7 object too.
    assert _failing(_context(runs)) == [5, 6, 7]
    _replace_run(runs, "b", 1, state="SKIPPED", attempts=(), attempts_used=0, lease_token=None)
    kill = Action(kind=Kind.KILL_AGENT, target="agent-0", at=_at(2.3), restored_at=_at(4))
    assert _failing(_context(runs, actions=[kill])) == []


def test_a_lost_attempt_needs_a_chaos_action_on_its_own_agent_or_the_whole_cluster() -> None:
    runs = _clean_runs()
    _lost_then_retried(runs)
    assert _failing(_context(runs)) == [5]
    elsewhere = Action(kind=Kind.STOP_AGENT, target="agent-9", at=_at(1.2), restored_at=_at(5))
    assert _failing(_context(runs, actions=[elsewhere])) == [5]
    for kind, target in [
        (Kind.STOP_AGENT, "agent-0"),
        (Kind.KILL_AGENT, "agent-0"),
        (Kind.RESTART_POSTGRES, "postgres"),
        (Kind.KILL_COORDINATOR, "coordinator-1"),
    ]:
        action = Action(kind=kind, target=target, at=_at(1.2), restored_at=_at(2))
        assert _failing(_context(runs, actions=[action])) == [], kind
    long_before = Action(kind=Kind.KILL_AGENT, target="agent-0", at=_at(-9), restored_at=_at(-8))
    assert _failing(_context(runs, actions=[long_before])) == [5]


def test_outputs_must_come_from_the_attempt_that_counted() -> None:
    writers = Workload(
        specs=(
            *WORKLOAD.specs[:1],
            {**WORKLOAD.specs[1], "command": ["sh", "-c", f"{WRITE_OUTPUT}; echo ok"]},
            *WORKLOAD.specs[2:],
        )
    )
    runs = _clean_runs()
    for index, run in enumerate(runs["a"]):
        runs["a"][index] = dataclasses.replace(run, outputs={"attempt": 1})
    context = dataclasses.replace(_context(runs), workload=writers)
    assert _failing(context) == []
    _replace_run(runs, "a", 1, outputs={"attempt": 2})
    assert _failing(dataclasses.replace(_context(runs), workload=writers)) == [2]


def test_a_process_that_died_by_itself_fails_unless_postgresql_was_down() -> None:
    def died(postgres_down: bool) -> ProcessExit:
        return ProcessExit(
            name="agent-1", exit_code=1, at=_at(1), postgres_down=postgres_down, log_tail=""
        )

    assert _failing(_context(_clean_runs(), exits=[died(True)])) == []
    assert _failing(_context(_clean_runs(), exits=[died(False)])) == [8]
