"""Scheduling rules that run inside store transactions: dependency (`after`)
resolution, the overlap policy, and the cycle check.

Fan-in is race-free because resolution locks the downstream task's row before
it looks at its upstreams' runs: two upstreams succeeding at once on two
coordinators are serialised there, and the second sees the first's commit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import NamedTuple

from hydra.coordinator.store_base import BaseStore, Cursor, Row, spec_of_version
from hydra.domain import After, Overlap, RunState, TaskSpec
from hydra.errors import FailedPrecondition

log = logging.getLogger("hydra.coordinator.dependencies")

#: Causes of runs the overlap policy applies to; manual runs and backfills queue.
SCHEDULED_CAUSES = frozenset({"cron", "interval", "at", "after"})
_BROKEN = frozenset({RunState.FAILED.value, RunState.CANCELLED.value, RunState.SKIPPED.value})


class Occurrence(NamedTuple):
    """An occurrence and the zone templates show it in."""

    instant: datetime
    timezone: str


class DependencyStore(BaseStore):
    """Dependency and overlap rules, applied within the caller's transaction."""

    async def after_terminal(
        self, cur: Cursor, task_name: str, occurrence: datetime, timezone: str
    ) -> None:
        """A run of `task_name` ended: create, skip or re-open its dependents' runs.
        Dependents show the occurrence in the upstream run's zone: a pipeline sees one day."""
        for row in await self.all(cur, "lock_dependents", name=task_name):
            if row["paused"]:
                continue
            spec = spec_of_version(row["id"], row["version"], row["spec"])
            for upstreams in _after_groups(spec, task_name):
                await self._resolve(cur, row, spec, upstreams, Occurrence(occurrence, timezone))

    async def _resolve(
        self,
        cur: Cursor,
        task: Row,
        spec: TaskSpec,
        upstreams: Sequence[str],
        occurrence: Occurrence,
    ) -> None:
        rows = await self.all(
            cur, "run_states_for_occurrence", names=list(upstreams), occurrence=occurrence.instant
        )
        states = {r["name"]: r["state"] for r in rows}
        broken = next((n for n in upstreams if states.get(n) in _BROKEN), None)
        if broken is None and any(states.get(n) != "SUCCEEDED" for n in upstreams):
            return  # still waiting for an upstream
        existing = await self.one(
            cur, "run_of_task_at", task_id=task["id"], occurrence=occurrence.instant
        )
        if broken is not None:
            reason = f"upstream {broken} {states[broken].lower()}"
            await self._skip_dependent(cur, task, spec, existing, occurrence, reason)
        else:
            await self._start_dependent(cur, task, spec, existing, occurrence)

    async def _start_dependent(
        self,
        cur: Cursor,
        task: Row,
        spec: TaskSpec,
        existing: Row | None,
        occurrence: Occurrence,
    ) -> None:
        if existing is None:
            await self.insert_dependent_run(cur, task, spec, occurrence)
        elif existing["state"] == "SKIPPED" and existing["cause"] == "after":
            log.info(
                "task %s: upstreams succeeded for %s; re-opening its run",
                task["name"],
                occurrence.instant.isoformat(),
            )
            await self.run_query(cur, "reopen_skipped_run", id=existing["id"])
            self.notify_runs_changed(cur, [str(existing["id"])])
            self.notify_dispatch(cur)

    async def _skip_dependent(
        self,
        cur: Cursor,
        task: Row,
        spec: TaskSpec,
        existing: Row | None,
        occurrence: Occurrence,
        reason: str,
    ) -> None:
        if existing is None:
            run_id = await self.insert_dependent_run(cur, task, spec, occurrence)
        elif existing["state"] == "QUEUED" and existing["cause"] == "after":
            run_id = str(existing["id"])
        else:
            return
        await self.skip(cur, run_id, reason)
        await self.after_terminal(cur, task["name"], occurrence.instant, occurrence.timezone)

    async def insert_dependent_run(
        self, cur: Cursor, task: Row, spec: TaskSpec, occurrence: Occurrence
    ) -> str:
        """Create the run of a dependent task for an occurrence; returns its id."""
        raise NotImplementedError  # provided by Store, which knows how runs are inserted

    async def skip(self, cur: Cursor, run_id: str, reason: str) -> None:
        """End a run that never ran as SKIPPED."""
        await self.run_query(cur, "skip_run", id=run_id, reason=reason)
        self.notify_runs_changed(cur, [run_id])

    async def apply_overlap(self, cur: Cursor, run_id: str, task_id: int, spec: TaskSpec) -> None:
        """A scheduled run was created: skip it, or cancel the runs it replaces, when the
        task already has max_active_runs queued or active runs."""
        overlap = spec.concurrency.overlap
        if overlap is Overlap.QUEUE:
            return
        others = await self.all(cur, "active_runs_of_task", task_id=task_id, except_id=run_id)
        limit = spec.concurrency.max_active_runs
        if len(others) < limit:
            return
        if overlap is Overlap.SKIP:
            await self.skip(
                cur,
                run_id,
                f"overlap: {len(others)} run(s) already queued or active (max_active_runs {limit})",
            )
            return
        for other in others[: len(others) - limit + 1]:
            await self.cancel_in_transaction(
                cur, other, f"replaced by run {run_id} (overlap: replace)"
            )

    async def cancel_in_transaction(self, cur: Cursor, run: Row, reason: str) -> None:
        """Cancel a queued or active run; its agent is told to kill the attempt."""
        raise NotImplementedError  # provided by Store

    async def check_no_cycle(self, cur: Cursor, spec: TaskSpec) -> None:
        """Refuse a spec whose `after` triggers would close a cycle (under a lock, so
        two concurrent applies cannot close one together)."""
        await self.run_query(cur, "lock_dependency_graph")
        edges: dict[str, set[str]] = {}
        for row in await self.all(cur, "after_edges"):
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
