"""Dependency triggers, overlap and cycles against real PostgreSQL, driven
through the store as coordinators drive it (each call its own transaction)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from hydra.coordinator.lease_store import LeaseStore
from hydra.coordinator.records import AttemptReport, NewRun
from hydra.coordinator.store import open_pool
from hydra.coordinator.tasks import apply_spec
from hydra.domain import After, Concurrency, Cron, Overlap, RunState, TaskSpec
from hydra.errors import FailedPrecondition

TTL = timedelta(seconds=30)
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


async def _apply(store: LeaseStore, name: str, **fields: object) -> None:
    spec = TaskSpec(name=name, command=("true",), **fields)  # type: ignore[arg-type]
    await apply_spec(store, spec, dry_run=False, now=datetime.now(UTC))


async def _run(store: LeaseStore, task: str, occurrence: datetime, cause: str = "manual") -> str:
    task_id, registered = await store.task_ref(task)
    run, _ = await store.create_manual_run(
        NewRun(
            task_id=task_id,
            task_version=registered.version,
            spec=registered.spec,
            occurrence=occurrence,
            cause=cause,
        )
    )
    return run.id


async def _lease(store: LeaseStore, agent: str) -> list[tuple[str, int]]:
    claimed = await store.claim_runs(agent, {}, 100, TTL)
    for run in claimed:
        await store.start_attempt(run.run_id, run.lease_token, agent, ["true"], BASE)
    return [(run.run_id, run.lease_token) for run in claimed]


async def _finish(store: LeaseStore, lease: tuple[str, int], outcome: str) -> None:
    report = AttemptReport(
        run_id=lease[0],
        lease_token=lease[1],
        agent_id="a",
        outcome=outcome,
        argv=("true",),
        started_at=BASE,
        finished_at=BASE,
        exit_code=0 if outcome == "SUCCEEDED" else 1,
    )
    assert (await store.finish_attempt(report)).accepted


async def _runs(store: LeaseStore, task: str) -> list[tuple[datetime, RunState, str]]:
    runs = await store.list_runs(task=task, states=[], after=None, limit=1000)
    return sorted((r.occurrence, r.state, r.reason) for r in runs)


async def test_fan_in_racing_upstreams_create_exactly_one_downstream_run(
    store: LeaseStore, db_conninfo: str
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
    runs = {
        (r.task, r.occurrence): r.id
        for r in await store.list_runs(task="", states=[], after=None, limit=1000)
    }
    other_pool = open_pool(db_conninfo, 4)
    await other_pool.open(wait=True)
    other = LeaseStore(other_pool)
    try:
        for occurrence in occurrences:  # both upstreams succeed at the same instant
            a, b = runs[("a", occurrence)], runs[("b", occurrence)]
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
    store: LeaseStore,
) -> None:
    await _apply(store, "a")
    await _apply(store, "b", triggers=(After(tasks=("a",)),))
    await _apply(store, "c", triggers=(After(tasks=("b",)),))
    run_a = await _run(store, "a", BASE)
    [lease] = await _lease(store, "agent")
    await _finish(store, lease, "FAILED")
    assert await _runs(store, "b") == [(BASE, RunState.SKIPPED, "upstream a failed")]
    assert await _runs(store, "c") == [(BASE, RunState.SKIPPED, "upstream b skipped")]
    await store.retry_run(run_a)
    [lease] = await _lease(store, "agent")
    await _finish(store, lease, "SUCCEEDED")
    assert await _runs(store, "b") == [(BASE, RunState.QUEUED, "")]


async def test_a_cycle_is_refused_and_names_it(store: LeaseStore) -> None:
    await _apply(store, "a")
    await _apply(store, "b", triggers=(After(tasks=("a",)),))
    await _apply(store, "c", triggers=(After(tasks=("b",)),))
    with pytest.raises(FailedPrecondition, match=r"dependency cycle: a -> b -> c -> a"):
        await _apply(store, "a", triggers=(After(tasks=("c",)),))
    assert (await store.get_task("a")).version == 1


async def test_deleting_a_task_others_depend_on_needs_force(store: LeaseStore) -> None:
    await _apply(store, "a")
    await _apply(store, "b", triggers=(After(tasks=("a",)),))
    with pytest.raises(FailedPrecondition, match="dependency of b"):
        await store.delete_task("a", force=False)
    await store.delete_task("a", force=True)


@pytest.mark.parametrize("overlap", [Overlap.QUEUE, Overlap.SKIP, Overlap.REPLACE])
async def test_overlap_policy_when_the_active_limit_is_reached(
    store: LeaseStore, overlap: Overlap
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


async def test_queued_runs_start_in_occurrence_order(store: LeaseStore) -> None:
    await _apply(store, "t")
    for hour in (3, 1, 2):
        await _run(store, "t", BASE + timedelta(hours=hour))
    started = []
    for _ in range(3):
        [lease] = await _lease(store, "agent")
        started.append((await store.get_run(lease[0])).occurrence)
        await _finish(store, lease, "SUCCEEDED")
    assert started == sorted(started)
