"""Dependency triggers, overlap and cycles against real PostgreSQL, driven
through the store as coordinators drive it (each call its own transaction)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from hydra.coordinator.specs import apply_spec
from hydra.coordinator.store import Database, leases, open_pool, runs, tasks
from hydra.coordinator.store.records import AttemptReport, NewRun
from hydra.domain import (
    After,
    AttemptOutcome,
    Concurrency,
    Cron,
    Overlap,
    RunCause,
    RunState,
    TaskSpec,
)
from hydra.errors import FailedPrecondition

from support.store import create_manual_run, finish_attempt, start_attempt

TTL = timedelta(seconds=30)
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


async def _apply(store: Database, name: str, **fields: object) -> None:
    spec = TaskSpec(name=name, command=("true",), **fields)  # type: ignore[arg-type]
    await apply_spec(store, spec, dry_run=False, now=datetime.now(UTC))


async def _run(store: Database, task: str, occurrence: datetime, cause: str = "manual") -> str:
    task_id, registered = await store.run(tasks.task_ref, task)
    run, _ = await create_manual_run(
        store,
        NewRun(
            task_id=task_id,
            task_version=registered.version,
            spec=registered.spec,
            occurrence=occurrence,
            cause=RunCause(cause),
        ),
    )
    return run.id


async def _lease(store: Database, agent: str) -> list[tuple[str, int]]:
    claimed = await store.run(leases.claim, agent, {}, 100, TTL)
    for run in claimed:
        await start_attempt(store, run.run_id, run.lease_token, agent, ["true"], BASE)
    return [(run.run_id, run.lease_token) for run in claimed]


async def _finish(store: Database, lease: tuple[str, int], outcome: str) -> None:
    report = AttemptReport(
        run_id=lease[0],
        lease_token=lease[1],
        agent_id="a",
        outcome=AttemptOutcome(outcome),
        argv=("true",),
        started_at=BASE,
        finished_at=BASE,
        exit_code=0 if outcome == "SUCCEEDED" else 1,
    )
    assert (await finish_attempt(store, report)).accepted


async def _runs(store: Database, task: str) -> list[tuple[datetime, RunState, str]]:
    found = await store.run(runs.list_runs, task=task, states=[], after=None, limit=1000)
    return sorted((r.occurrence, r.state, r.reason) for r in found)


async def test_fan_in_racing_upstreams_create_exactly_one_downstream_run(
    store: Database, db_conninfo: str
) -> None:
    """Two coordinators (two stores, two pools) report the two upstreams' successes
    at the same instant, 40 times over: each occurrence gets one downstream run."""
    await _apply(store, "a", concurrency=Concurrency(max_active_runs=100))
    await _apply(store, "b", concurrency=Concurrency(max_active_runs=100))
    await _apply(store, "c", triggers=(After(tasks=("a", "b")),))
    occurrences = [BASE + timedelta(minutes=i) for i in range(40)]
    for occurrence in occurrences:
        await _run(store, "a", occurrence)
        await _run(store, "b", occurrence)
    leases = dict(await _lease(store, "agent"))
    everything = await store.run(runs.list_runs, task="", states=[], after=None, limit=1000)
    run_ids = {(r.task, r.occurrence): r.id for r in everything}
    other_pool = open_pool(db_conninfo, 4)
    await other_pool.open(wait=True)
    other = Database(other_pool)
    try:
        for occurrence in occurrences:  # both upstreams succeed at the same instant
            a, b = run_ids[("a", occurrence)], run_ids[("b", occurrence)]
            await asyncio.gather(
                _finish(store, (a, leases[a]), "SUCCEEDED"),
                _finish(other, (b, leases[b]), "SUCCEEDED"),
            )
    finally:
        await other_pool.close()
    downstream = await _runs(store, "c")
    assert [o for o, _, _ in downstream] == occurrences
    assert {s for _, s, _ in downstream} == {RunState.QUEUED}


async def test_a_failed_upstream_skips_the_chain_and_a_successful_retry_reopens_it(
    store: Database,
) -> None:
    await _apply(store, "a")
    await _apply(store, "b", triggers=(After(tasks=("a",)),))
    await _apply(store, "c", triggers=(After(tasks=("b",)),))
    run_a = await _run(store, "a", BASE)
    [lease] = await _lease(store, "agent")
    await _finish(store, lease, "FAILED")
    assert await _runs(store, "b") == [(BASE, RunState.SKIPPED, "upstream a failed")]
    assert await _runs(store, "c") == [(BASE, RunState.SKIPPED, "upstream b skipped")]
    await store.run(runs.retry_run, run_a)
    [lease] = await _lease(store, "agent")
    await _finish(store, lease, "SUCCEEDED")
    assert await _runs(store, "b") == [(BASE, RunState.QUEUED, "")]


async def test_a_cycle_is_refused_and_names_it(store: Database) -> None:
    await _apply(store, "a")
    await _apply(store, "b", triggers=(After(tasks=("a",)),))
    await _apply(store, "c", triggers=(After(tasks=("b",)),))
    with pytest.raises(FailedPrecondition, match=r"dependency cycle: a -> b -> c -> a"):
        await _apply(store, "a", triggers=(After(tasks=("c",)),))
    assert (await store.run(tasks.get_task, "a")).version == 1


async def test_deleting_a_task_others_depend_on_needs_force(store: Database) -> None:
    await _apply(store, "a")
    await _apply(store, "b", triggers=(After(tasks=("a",)),))
    with pytest.raises(FailedPrecondition, match="dependency of b"):
        await store.run(tasks.delete_task, "a", force=False)
    await store.run(tasks.delete_task, "a", force=True)


@pytest.mark.parametrize("overlap", [Overlap.QUEUE, Overlap.SKIP, Overlap.REPLACE])
async def test_overlap_policy_when_the_active_limit_is_reached(
    store: Database, overlap: Overlap
) -> None:
    await _apply(
        store,
        "t",
        concurrency=Concurrency(max_active_runs=1, overlap=overlap),
        triggers=(Cron(expression="0 * * * *"),),
    )
    first = await _run(store, "t", BASE, cause="cron")
    [lease] = await _lease(store, "agent")
    assert lease[0] == first
    await _run(store, "t", BASE + timedelta(hours=1), cause="cron")
    states = [s for _, s, _ in await _runs(store, "t")]
    expected = {
        Overlap.QUEUE: [RunState.RUNNING, RunState.QUEUED],
        Overlap.SKIP: [RunState.RUNNING, RunState.SKIPPED],
        Overlap.REPLACE: [RunState.CANCELLED, RunState.QUEUED],
    }[overlap]
    assert states == expected
    if overlap is Overlap.QUEUE:  # the second waits for the first: max_active_runs holds
        assert await _lease(store, "agent") == []
        await _finish(store, lease, "SUCCEEDED")
        assert len(await _lease(store, "agent")) == 1


async def test_queued_runs_start_in_occurrence_order(store: Database) -> None:
    await _apply(store, "t")
    for hour in (3, 1, 2):
        await _run(store, "t", BASE + timedelta(hours=hour))
    started = []
    for _ in range(3):
        [lease] = await _lease(store, "agent")
        started.append((await store.run(runs.get_run, lease[0])).occurrence)
        await _finish(store, lease, "SUCCEEDED")
    assert started == sorted(started)
