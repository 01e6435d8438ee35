"""Scheduling rules applied inside the caller's transaction: dependency
(`after`) resolution, the overlap policy, and the cycle check.

Fan-in is race-free because resolution locks the downstream task's row before
it looks at its upstreams' runs: two upstreams succeeding at once on two
coordinators are serialised there, and the second sees the first's commit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import NamedTuple

from hydra.coordinator.store import runs
from hydra.coordinator.store.records import NewRun
from hydra.coordinator.store.transaction import Row, Transaction
from hydra.domain import After, Overlap, RunCause, RunState, TaskSpec
from hydra.errors import FailedPrecondition

log = logging.getLogger("hydra.coordinator.dependencies")

_BROKEN = frozenset({RunState.FAILED.value, RunState.CANCELLED.value, RunState.SKIPPED.value})


class Occurrence(NamedTuple):
    """An occurrence and the zone templates show it in."""

    instant: datetime
    timezone: str


async def after_terminal(
    tx: Transaction, task_name: str, occurrence: datetime, timezone: str
) -> None:
    """A run of `task_name` ended: create, skip or re-open its dependents' runs.
    Dependents show the occurrence in the upstream run's zone: a pipeline sees one day."""
    for row in await tx.all("lock_dependents", name=task_name):
        if row["paused"]:
            continue
        spec = tx.spec(row["id"], row["version"], row["spec"])
        for upstreams in _after_groups(spec, task_name):
            await _resolve(tx, row, spec, upstreams, Occurrence(occurrence, timezone))


async def _resolve(
    tx: Transaction, task: Row, spec: TaskSpec, upstreams: Sequence[str], occurrence: Occurrence
) -> None:
    rows = await tx.all(
        "run_states_for_occurrence", names=list(upstreams), occurrence=occurrence.instant
    )
    states = {r["name"]: r["state"] for r in rows}
    broken = next((n for n in upstreams if states.get(n) in _BROKEN), None)
    if broken is None and any(states.get(n) != "SUCCEEDED" for n in upstreams):
        return  # still waiting for an upstream
    existing = await tx.one("run_of_task_at", task_id=task["id"], occurrence=occurrence.instant)
    if broken is not None:
        reason = f"upstream {broken} {states[broken].lower()}"
        await _skip_dependent(tx, task, spec, existing, occurrence, reason)
    else:
        await _start_dependent(tx, task, spec, existing, occurrence)


async def _start_dependent(
    tx: Transaction, task: Row, spec: TaskSpec, existing: Row | None, occurrence: Occurrence
) -> None:
    if existing is None:
        await _insert_dependent_run(tx, task, spec, occurrence)
    elif existing["state"] == "SKIPPED" and existing["cause"] == RunCause.AFTER:
        log.info(
            "task %s: upstreams succeeded for %s; re-opening its run",
            task["name"],
            occurrence.instant.isoformat(),
        )
        await tx.execute("reopen_skipped_run", id=existing["id"])
        tx.runs_changed([str(existing["id"])])
        tx.work_available()


async def _skip_dependent(
    tx: Transaction,
    task: Row,
    spec: TaskSpec,
    existing: Row | None,
    occurrence: Occurrence,
    reason: str,
) -> None:
    if existing is None:
        run_id = await _insert_dependent_run(tx, task, spec, occurrence)
    elif existing["state"] == "QUEUED" and existing["cause"] == RunCause.AFTER:
        run_id = str(existing["id"])
    else:
        return
    await runs.skip(tx, run_id, reason)
    await after_terminal(tx, task["name"], occurrence.instant, occurrence.timezone)


async def _insert_dependent_run(
    tx: Transaction, task: Row, spec: TaskSpec, occurrence: Occurrence
) -> str:
    """Create the run of a dependent task for an occurrence; returns its id."""
    new_run = NewRun(
        task_id=task["id"],
        task_version=task["version"],
        spec=spec,
        occurrence=occurrence.instant,
        cause=RunCause.AFTER,
        params=spec.params,
        timezone=occurrence.timezone,
    )
    created = await runs.insert_runs(tx, [new_run])
    if created:
        return created[0]
    existing = await tx.one("run_of_task_at", task_id=task["id"], occurrence=occurrence.instant)
    assert existing is not None
    return str(existing["id"])


async def apply_overlap(tx: Transaction, run_id: str, task_id: int, spec: TaskSpec) -> None:
    """A scheduled run was created: skip it, or cancel the runs it replaces, when the
    task already has max_active_runs queued or active runs."""
    overlap = spec.concurrency.overlap
    if overlap is Overlap.QUEUE:
        return
    others = await tx.all("active_runs_of_task", task_id=task_id, except_id=run_id)
    limit = spec.concurrency.max_active_runs
    if len(others) < limit:
        return
    if overlap is Overlap.SKIP:
        await runs.skip(
            tx,
            run_id,
            f"overlap: {len(others)} run(s) already queued or active (max_active_runs {limit})",
        )
        return
    for other in others[: len(others) - limit + 1]:
        await runs.cancel_locked(tx, other, f"replaced by run {run_id} (overlap: replace)")


async def check_no_cycle(tx: Transaction, spec: TaskSpec) -> None:
    """Refuse a spec whose `after` triggers would close a cycle (under a lock, so
    two concurrent applies cannot close one together)."""
    await tx.execute("lock_dependency_graph")
    edges: dict[str, set[str]] = {}
    for row in await tx.all("after_edges"):
        if row["downstream"] != spec.name:
            edges.setdefault(row["downstream"], set()).add(row["upstream"])
    edges[spec.name] = {
        t for trigger in spec.triggers if isinstance(trigger, After) for t in trigger.tasks
    }
    cycle = find_cycle(edges, spec.name)
    if cycle:
        raise FailedPrecondition(f"dependency cycle: {' -> '.join(reversed(cycle))}")


def _after_groups(spec: TaskSpec, upstream: str) -> Iterable[tuple[str, ...]]:
    return (t.tasks for t in spec.triggers if isinstance(t, After) and upstream in t.tasks)


def find_cycle(upstreams_of: Mapping[str, Iterable[str]], start: str) -> list[str]:
    """A path start -> ... -> start following 'depends on' edges, or [] if none."""
    path: list[str] = [start]
    seen: set[str] = set()

    def visit(node: str) -> bool:
        for upstream in sorted(upstreams_of.get(node, ())):
            if upstream == start:
                path.append(start)
                return True
            if upstream in seen:
                continue
            seen.add(upstream)
            path.append(upstream)
            if visit(upstream):
                return True
            path.pop()
        return False

    return path if visit(start) else []
