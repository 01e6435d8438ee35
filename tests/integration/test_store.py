"""The store against real PostgreSQL: every lease transition is a compare-and-set
on the fencing token, and the hot-path statements behave under contention."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from hydra.coordinator.loops.triggers import plan_fire
from hydra.coordinator.specs import apply_spec
from hydra.coordinator.store import Database, attempts, leases, runs, tasks, triggers
from hydra.coordinator.store.queries import all_queries
from hydra.coordinator.store.records import (
    AttemptReport,
    AttemptStart,
    NewRun,
    OutputTail,
    ReportVerdict,
)
from hydra.domain import (
    After,
    AttemptOutcome,
    Concurrency,
    Cron,
    Retry,
    RunCause,
    RunState,
    TaskSpec,
)
from hydra.errors import FailedPrecondition, NotFound

from support.store import create_manual_run, finish_attempt, start_attempt

TTL = timedelta(seconds=30)
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


async def _task(store: Database, **fields: object) -> int:
    spec = TaskSpec(**{"name": "t", "command": ("true",), **fields})  # type: ignore[arg-type]
    await apply_spec(store, spec, dry_run=False, now=NOW)
    task_id, _ = await store.run(tasks.task_ref, spec.name)
    return task_id


async def _queued_run(store: Database, **fields: object) -> str:
    task_id = await _task(store, **fields)
    _, task = await store.run(tasks.task_ref, "t")
    run, created = await create_manual_run(
        store,
        NewRun(
            task_id=task_id,
            task_version=task.version,
            spec=task.spec,
            occurrence=NOW - timedelta(minutes=1),
            cause=RunCause.MANUAL,
        ),
    )
    assert created
    return run.id


async def _runs(store: Database, name: str, occurrences: list[datetime], **fields: object) -> None:
    """A task `name` (with `fields`) and a run of it for each occurrence."""
    task_id = await _task(store, name=name, **fields)
    _, task = await store.run(tasks.task_ref, name)
    await store.run(
        runs.insert_runs,
        [
            NewRun(
                task_id=task_id,
                task_version=1,
                spec=task.spec,
                occurrence=o,
                cause=RunCause.BACKFILL,
            )
            for o in occurrences
        ],
    )


def _report(run_id: str, token: int, outcome: str, **fields: object) -> AttemptReport:
    return AttemptReport(
        run_id=run_id,
        lease_token=token,
        agent_id="a1",
        outcome=AttemptOutcome(outcome),
        argv=("true",),
        started_at=NOW,
        finished_at=NOW,
        **fields,
    )  # type: ignore[arg-type]


async def test_apply_is_idempotent_and_versions_changes(store: Database) -> None:
    spec = TaskSpec(name="t", command=("true",))
    first = await apply_spec(store, spec, dry_run=False, now=NOW)
    again = await apply_spec(store, spec, dry_run=False, now=NOW)
    changed = await apply_spec(
        store, TaskSpec(name="t", command=("false",)), dry_run=False, now=NOW
    )
    assert (first.changed, first.task.version) == (True, 1)
    assert (again.changed, again.task.version) == (False, 1)
    assert (changed.changed, changed.previous_version, changed.task.version) == (True, 1, 2)
    _, versions = await store.run(tasks.get_task_versions, "t")
    assert [v.version for v in versions] == [2, 1]


async def test_concurrent_applies_of_a_new_task_make_one_task(store: Database) -> None:
    spec = TaskSpec(name="t", command=("true",))
    results = await asyncio.gather(
        *(apply_spec(store, spec, dry_run=False, now=NOW) for _ in range(4))
    )
    assert sum(r.changed for r in results) == 1
    assert len(await store.run(tasks.list_tasks, after="", prefix="", limit=10)) == 1


async def test_claims_never_hand_one_run_to_two_agents(store: Database) -> None:
    task_id = await _task(store, concurrency=Concurrency(max_active_runs=100))
    _, task = await store.run(tasks.task_ref, "t")
    await store.run(
        runs.insert_runs,
        [
            NewRun(
                task_id=task_id,
                task_version=1,
                spec=task.spec,
                occurrence=NOW - timedelta(seconds=i),
                cause=RunCause.BACKFILL,
            )
            for i in range(20)
        ],
    )
    claims = await asyncio.gather(*(store.run(leases.claim, f"a{i}", {}, 5, TTL) for i in range(4)))
    claimed = [c.run_id for batch in claims for c in batch]
    assert len(claimed) == len(set(claimed)) == 20
    tokens = [c.lease_token for batch in claims for c in batch]
    assert len(set(tokens)) == 20


async def test_a_task_with_a_large_backlog_does_not_starve_other_tasks(
    store: Database,
) -> None:
    # 1,500 due runs of a task that may run one at a time, all due before the
    # other task's run: the claim still finds the other task.
    await _runs(store, "backlog", [NOW + timedelta(seconds=i) for i in range(1500)])
    [first] = await store.run(leases.claim, "a1", {}, 5, TTL)
    assert first.task_name == "backlog"
    await _runs(store, "other", [NOW + timedelta(seconds=2000)])
    claimed = await store.run(leases.claim, "a1", {}, 5, TTL)
    assert [run.task_name for run in claimed] == ["other"]


async def test_selector_must_be_satisfied_by_the_agent_labels(store: Database) -> None:
    await _queued_run(store, selector={"pool": "gpu"})
    assert await store.run(leases.claim, "a1", {"pool": "cpu"}, 5, TTL) == []
    assert len(await store.run(leases.claim, "a2", {"pool": "gpu", "zone": "x"}, 5, TTL)) == 1


async def test_a_report_with_a_stale_token_changes_nothing(store: Database) -> None:
    run_id = await _queued_run(store, retry=Retry(max_attempts=2, backoff=timedelta(0)))
    [first] = await store.run(leases.claim, "a1", {}, 1, TTL)
    assert await start_attempt(store, run_id, first.lease_token, "a1", ["true"], NOW)
    assert (
        await finish_attempt(store, _report(run_id, first.lease_token, "FAILED", exit_code=1))
    ).accepted
    [second] = await store.run(leases.claim, "a2", {}, 1, TTL)
    before = await store.run(runs.get_run, run_id)
    late = await finish_attempt(store, _report(run_id, first.lease_token, "SUCCEEDED"))
    assert not late.accepted and "stale lease" in late.reason
    assert await store.run(runs.get_run, run_id) == before
    assert not await start_attempt(store, run_id, first.lease_token, "a1", ["true"], NOW)
    assert second.lease_token > first.lease_token


async def test_a_batch_starts_and_finishes_many_attempts_statement_by_kind(
    store: Database,
) -> None:
    await _runs(
        store,
        "t",
        [NOW - timedelta(minutes=m) for m in (1, 2, 3)],
        concurrency=Concurrency(max_active_runs=5),
    )
    claimed = await store.run(leases.claim, "a1", {}, 3, TTL)
    one, two, three = ((lease.run_id, lease.lease_token) for lease in claimed)
    starts = [
        AttemptStart(run_id=run_id, lease_token=token, argv=("true",), started_at=NOW)
        for run_id, token in (one, two, three, (one[0], one[1] + 7))
    ]
    async with store.transaction() as tx:
        assert await attempts.start(tx, "a1", starts) == {one, two, three}  # not the stale one
        verdicts = await attempts.finish(
            tx,
            [
                _report(*one, "SUCCEEDED"),
                _report(*two, "FAILED", exit_code=3),
                _report(*three, "SUCCEEDED"),
                _report(*one, "SUCCEEDED"),  # the same report again, in the same batch
            ],
        )
    assert [v.accepted for v in verdicts] == [True, True, True, False]
    assert verdicts[3].reason == "run is already SUCCEEDED"
    found = [await store.run(runs.get_run, run_id) for run_id, _ in (one, two, three)]
    assert [run.state for run in found] == [
        RunState.SUCCEEDED,
        RunState.FAILED,
        RunState.SUCCEEDED,
    ]
    assert [len(run.attempts) for run in found] == [1, 1, 1]
    assert found[1].attempts[0].exit_code == 3


async def test_a_run_succeeds_once(store: Database) -> None:
    run_id = await _queued_run(store)
    [lease] = await store.run(leases.claim, "a1", {}, 1, TTL)
    await start_attempt(store, run_id, lease.lease_token, "a1", ["true"], NOW)
    assert (await finish_attempt(store, _report(run_id, lease.lease_token, "SUCCEEDED"))).accepted
    again = await finish_attempt(store, _report(run_id, lease.lease_token, "SUCCEEDED"))
    assert not again.accepted
    run = await store.run(runs.get_run, run_id)
    assert run.state is RunState.SUCCEEDED and len(run.attempts) == 1
    with pytest.raises(FailedPrecondition):
        await store.run(runs.retry_run, run_id)


async def test_expired_lease_loses_the_attempt_and_requeues(store: Database) -> None:
    run_id = await _queued_run(store, retry=Retry(max_attempts=2))
    [lease] = await store.run(leases.claim, "a1", {}, 1, timedelta(milliseconds=1))
    await start_attempt(store, run_id, lease.lease_token, "a1", ["true"], NOW)
    await asyncio.sleep(0.01)  # let a 1 ms lease expire
    assert await store.run(leases.reap_expired) == 1
    run = await store.run(runs.get_run, run_id)
    assert run.state is RunState.QUEUED and run.attempts[0].state.value == "LOST"
    assert "lost" in run.reason


async def test_an_expired_lease_with_no_attempt_left_fails_the_run_and_skips_its_dependents(
    store: Database,
) -> None:
    run_id = await _queued_run(store)  # one attempt
    downstream = TaskSpec(name="after-t", command=("true",), triggers=(After(tasks=("t",)),))
    await apply_spec(store, downstream, dry_run=False, now=NOW)
    [lease] = await store.run(leases.claim, "a1", {}, 1, timedelta(milliseconds=1))
    await start_attempt(store, run_id, lease.lease_token, "a1", ["true"], NOW)
    await asyncio.sleep(0.01)  # let a 1 ms lease expire
    assert await store.run(leases.reap_expired) == 1
    run = await store.run(runs.get_run, run_id)
    assert run.state is RunState.FAILED and run.attempts[0].state.value == "LOST"
    [skipped] = await store.run(runs.list_runs, task="after-t", states=[], after=None, limit=10)
    assert (skipped.state, skipped.reason) == (RunState.SKIPPED, "upstream t failed")


async def test_renewal_only_extends_current_leases(store: Database) -> None:
    run_id = await _queued_run(store)
    [lease] = await store.run(leases.claim, "a1", {}, 1, TTL)
    renewed = await store.run(
        leases.renew,
        "a1",
        [(run_id, lease.lease_token), (run_id, lease.lease_token + 99)],
        TTL,
        draining=False,
        coordinator_id="c",
    )
    assert renewed == {(run_id, lease.lease_token)}
    assert (
        await store.run(
            leases.renew,
            "a2",
            [(run_id, lease.lease_token)],
            TTL,
            draining=False,
            coordinator_id="c",
        )
        == set()
    )


async def test_output_keeps_a_bounded_head(store: Database) -> None:
    run_id = await _queued_run(store)
    [lease] = await store.run(leases.claim, "a1", {}, 1, TTL)
    await start_attempt(store, run_id, lease.lease_token, "a1", ["true"], NOW)
    for i in range(10):
        data = f"{i}".encode() * 10
        await store.run(attempts.append_output, run_id, lease.lease_token, 1, data, limit=35)
    chunks = await store.run(runs.read_output, run_id, after_seq=0, attempt=0)
    kept = b"".join(c.data for c in chunks)
    assert kept == b"0" * 10 + b"1" * 10 + b"2" * 10 + b"3" * 5


async def _output_after_end(
    store: Database, head: dict[int, bytes], tails: list[OutputTail]
) -> list[tuple[int, bytes, int]]:
    """(stream, data, dropped) of what is stored after `head` was streamed and the
    attempt ended reporting `tails`."""
    run_id = await _queued_run(store)
    [lease] = await store.run(leases.claim, "a1", {}, 1, TTL)
    await start_attempt(store, run_id, lease.lease_token, "a1", ["true"], NOW)
    for stream, data in head.items():
        await store.run(attempts.append_output, run_id, lease.lease_token, stream, data, limit=100)
    report = _report(run_id, lease.lease_token, "SUCCEEDED", output_tails=tuple(tails))
    assert (await finish_attempt(store, report)).accepted
    chunks = await store.run(runs.read_output, run_id, after_seq=0, attempt=0)
    return [(c.stream, c.data, c.dropped_bytes) for c in chunks]


async def test_the_end_of_the_output_is_stored_after_a_marker(store: Database) -> None:
    stored = await _output_after_end(
        store,
        {1: b"0123", 2: b"ab"},
        [
            OutputTail(stream=1, total_bytes=1000, data=b"end of stdout"),
            OutputTail(stream=2, total_bytes=5, data=b"bcde"),  # overlaps the head
        ],
    )
    assert stored == [
        (1, b"0123", 0),
        (2, b"ab", 0),
        (1, b"", 1000 - 4 - 13),
        (1, b"end of stdout", 0),
        (2, b"cde", 0),
    ]


async def test_output_that_fit_gets_no_marker_and_no_copy(store: Database) -> None:
    stored = await _output_after_end(
        store, {1: b"all of it"}, [OutputTail(stream=1, total_bytes=9, data=b"of it")]
    )
    assert stored == [(1, b"all of it", 0)]


async def test_due_triggers_fire_once_however_many_loops_race(store: Database) -> None:
    await apply_spec(
        store,
        TaskSpec(name="t", command=("true",), triggers=(Cron(expression="* * * * * *"),)),
        dry_run=False,
        now=datetime.now(UTC) - timedelta(seconds=3),
    )
    # Mid-second: no occurrence is within LEASE_AHEAD, when it would get its run too.
    await asyncio.sleep((0.5 - datetime.now(UTC).microsecond / 1e6) % 1.0)
    fired = await asyncio.gather(
        *(store.run(triggers.fire_due, datetime.now(UTC), 10, plan_fire) for _ in range(4))
    )
    assert sum(fired) == 1
    found = await store.run(runs.list_runs, task="t", states=[], after=None, limit=10)
    assert len(found) == 1  # catchup latest: one run for the newest missed second


async def test_unknown_ids_are_not_found(store: Database) -> None:
    with pytest.raises(NotFound):
        await store.run(runs.get_run, "not-a-uuid")
    with pytest.raises(NotFound):
        await store.run(tasks.get_task, "nope")


async def test_a_retry_is_leased_before_newer_work(store: Database) -> None:
    retried = await _queued_run(
        store,
        retry=Retry(max_attempts=2, backoff=timedelta(0)),
        concurrency=Concurrency(max_active_runs=100),
    )
    [lease] = await store.run(leases.claim, "a1", {}, 1, TTL)
    await start_attempt(store, retried, lease.lease_token, "a1", ["true"], NOW)
    _, task = await store.run(tasks.task_ref, "t")
    task_id, _ = await store.run(tasks.task_ref, "t")
    await store.run(
        runs.insert_runs,
        [  # a backlog that was due before the retry
            NewRun(
                task_id=task_id,
                task_version=task.version,
                spec=task.spec,
                occurrence=NOW - timedelta(hours=1, seconds=i),
                cause=RunCause.BACKFILL,
            )
            for i in range(5)
        ],
    )
    report = _report(retried, lease.lease_token, "FAILED", exit_code=1)
    assert (await finish_attempt(store, report)).accepted
    [next_up] = await store.run(leases.claim, "a2", {}, 1, TTL)
    assert next_up.run_id == retried


class _CountingCursor:
    """The transaction's own cursor, naming each query it runs."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        self._names = {sql: name for name, sql in all_queries().items()}
        self.ran: list[str] = []

    async def execute(self, sql: str, params: Any = None) -> Any:
        self.ran.append(self._names.get(sql, sql))
        return await self._cursor.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


async def _finish_counted(
    store: Database, reports: list[AttemptReport]
) -> tuple[list[str], list[ReportVerdict]]:
    """The queries `attempts.finish` ran for a batch, and its verdicts."""
    async with store.transaction() as tx:
        counting = _CountingCursor(tx.cursor)
        tx.cursor = counting  # type: ignore[assignment]
        verdicts = await attempts.finish(tx, reports)
        tx.cursor = counting._cursor
    return counting.ran, verdicts


@pytest.mark.parametrize("size", [1, 16])
async def test_a_batch_of_ends_costs_the_same_statements_whatever_its_size(
    store: Database, db_conninfo: str, size: int
) -> None:
    """Successes with output tails and failures with a retry left, of RUNNING runs,
    and failures of runs whose start never arrived: a fixed number of statements."""
    await _runs(
        store,
        "t",
        [NOW - timedelta(minutes=m) for m in range(1, 3 * size + 1)],
        concurrency=Concurrency(max_active_runs=3 * size),
        retry=Retry(max_attempts=2, backoff=timedelta(minutes=5)),
    )
    claimed = await store.run(leases.claim, "a1", {}, 3 * size, TTL)
    running, unstarted = claimed[: 2 * size], claimed[2 * size :]
    for lease in running:
        assert await start_attempt(store, lease.run_id, lease.lease_token, "a1", ["true"], NOW)
    tail = (OutputTail(stream=1, total_bytes=5, data=b"done\n"),)
    succeeded = [
        _report(lease.run_id, lease.lease_token, "SUCCEEDED", output_tails=tail)
        for lease in running[:size]
    ]
    failed = [
        _report(lease.run_id, lease.lease_token, "FAILED", exit_code=1)
        for lease in running[size:] + unstarted
    ]

    async with await psycopg.AsyncConnection.connect(db_conninfo, autocommit=True) as listener:
        await listener.execute("LISTEN hydra_output")
        ran, verdicts = await _finish_counted(store, succeeded + failed)
        notified = [n.payload async for n in listener.notifies(timeout=5, stop_after=size)]

    assert ran == ["lock_runs", "start_attempts", "finish_attempts"]
    assert sorted(notified) == sorted(lease.run_id for lease in running[:size])
    assert [verdict.accepted for verdict in verdicts] == [True] * 3 * size
    ended = await store.run(runs.get_runs_with_attempts, [lease.run_id for lease in claimed])
    by_id = {run.id: run for run in ended}
    for lease in running[:size]:
        assert by_id[lease.run_id].state is RunState.SUCCEEDED
        output = await store.run(runs.read_output, lease.run_id, after_seq=0, attempt=0)
        assert b"".join(chunk.data for chunk in output) == b"done\n"
    for lease in running[size:] + unstarted:
        run = by_id[lease.run_id]
        assert (run.state, run.reason) == (RunState.QUEUED, "attempt 1 failed with exit code 1")
        assert [attempt.exit_code for attempt in run.attempts] == [1]


async def test_a_second_report_on_a_run_costs_a_round_of_its_own(store: Database) -> None:
    run_id = await _queued_run(store)
    [lease] = await store.run(leases.claim, "a1", {}, 1, TTL)
    assert await start_attempt(store, run_id, lease.lease_token, "a1", ["true"], NOW)
    report = _report(run_id, lease.lease_token, "SUCCEEDED")
    stale = _report(run_id, lease.lease_token - 1, "FAILED", exit_code=1)
    unknown = _report("00000000-0000-0000-0000-000000000000", 1, "SUCCEEDED")

    ran, verdicts = await _finish_counted(store, [stale, unknown, report, report])

    # A refusal costs nothing beyond the lock; each later round reads what the one before did.
    assert ran == ["lock_runs", "lock_runs", "finish_attempts", "lock_runs"]
    assert [verdict.reason for verdict in verdicts] == [
        f"stale lease {lease.lease_token - 1}: run is RUNNING under lease {lease.lease_token}",
        "unknown run",
        "",
        "run is already SUCCEEDED",
    ]
    assert [verdict.accepted for verdict in verdicts] == [False, False, True, False]


@pytest.mark.parametrize("size", [1, 4])
async def test_the_dependents_of_a_batch_of_ends_are_locked_by_one_statement(
    store: Database, size: int
) -> None:
    """Then resolved run by run: what stays per run is the dependent's own resolution."""
    occurrences = [NOW - timedelta(minutes=m) for m in range(1, size + 1)]
    await _runs(store, "up", occurrences, concurrency=Concurrency(max_active_runs=size))
    await _task(store, name="down", triggers=(After(tasks=("up",)),))
    claimed = await store.run(leases.claim, "a1", {}, size, TTL)
    for lease in claimed:
        assert await start_attempt(store, lease.run_id, lease.lease_token, "a1", ["true"], NOW)

    ran, verdicts = await _finish_counted(
        store, [_report(lease.run_id, lease.lease_token, "SUCCEEDED") for lease in claimed]
    )

    assert all(verdict.accepted for verdict in verdicts)
    assert (
        ran
        == ["lock_runs", "finish_attempts", "lock_dependents"]
        + [
            "run_states_for_occurrence",
            "run_of_task_at",
            "insert_runs",
        ]
        * size
    )
    down = await store.run(runs.list_runs, task="down", states=[], after=None, limit=size + 1)
    assert sorted(run.occurrence for run in down) == sorted(occurrences)
