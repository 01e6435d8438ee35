"""Runs on request: manual triggers, retries, cancels and backfills. Each is one
transaction, in which the dispatcher leases what it made available, and in
which the audit entry of the call that asked for it is recorded (None: not
recorded, e.g. a dry run)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from hydra.coordinator import schedule
from hydra.coordinator.loops.dispatcher import Dispatcher
from hydra.coordinator.store import Database, Transaction, audit, runs, tasks
from hydra.coordinator.store.records import NewRun
from hydra.domain import After, AuditEntry, Run, RunCause, Task, TaskSpec
from hydra.errors import FailedPrecondition, FieldProblem, InvalidArgument

#: Most occurrences one backfill may cover.
MAX_BACKFILL = 10_000
#: Longest idempotency key accepted.
MAX_KEY = 256


@dataclass(frozen=True, kw_only=True, slots=True)
class BackfillResult:
    """What a backfill found and did."""

    occurrences: list[datetime]
    created: list[Run]
    existing: int


async def trigger(
    database: Database,
    dispatcher: Dispatcher,
    task_name: str,
    *,
    params: Mapping[str, str],
    idempotency_key: str,
    occurrence: datetime | None,
    now: datetime,
    audit_entry: AuditEntry | None = None,
) -> tuple[Run, bool]:
    """A manual run, or the run an earlier call with the same key (or occurrence) made.
    The live task is read, and the run created and leased, in one transaction."""
    if len(idempotency_key) > MAX_KEY:
        raise InvalidArgument(f"at most {MAX_KEY} characters", path="idempotency_key")

    def manual_run(task_id: int, task: Task) -> NewRun:
        return NewRun(
            task_id=task_id,
            task_version=task.version,
            spec=task.spec,
            occurrence=occurrence or now,
            cause=RunCause.MANUAL,
            params=merge_params(task.spec, params),
            idempotency_key=idempotency_key or None,
            timezone=task.spec.timezone,
        )

    async with database.transaction() as tx:
        found = None
        if (known := database.recent_tasks.get(task_name)) is not None:
            # One statement creates the run and checks the task has not changed since.
            with contextlib.suppress(InvalidArgument):  # the current spec has the say
                found = await runs.create_or_find_if_current(tx, manual_run(*known))
        if found is None:
            task_id, task = await tasks.task_ref(tx, task_name)
            database.remember_task(task_name, task_id, task)
            found = await runs.create_or_find(tx, manual_run(task_id, task))
        run_id, created = found
        detail = f"run {run_id}" if created else f"run {run_id} (existing)"
        await _audit(tx, audit_entry, task=task_name, run_id=run_id, detail=detail)
        await dispatcher.lease_available(tx)
    return await database.run(runs.get_run, run_id), created


async def retry(
    database: Database,
    dispatcher: Dispatcher,
    run_id: str,
    *,
    audit_entry: AuditEntry | None = None,
) -> Run:
    """Queue a finished run for one more attempt (never a succeeded one)."""
    async with database.transaction() as tx:
        await runs.retry_run(tx, run_id)
        await dispatcher.lease_available(tx)
        run = await runs.get_run(tx, run_id)
        detail = f"now {run.state.value}"
        await _audit(tx, audit_entry, task=run.task, run_id=run.id, detail=detail)
        return run


async def cancel(
    database: Database,
    dispatcher: Dispatcher,
    run_id: str,
    reason: str,
    *,
    audit_entry: AuditEntry | None = None,
) -> Run:
    """Cancel a queued or active run; its agent is told to kill the attempt."""
    async with database.transaction() as tx:
        await runs.cancel_run(tx, run_id, reason)
        await dispatcher.lease_available(tx)
        run = await runs.get_run(tx, run_id)
        await _audit(tx, audit_entry, task=run.task, run_id=run.id, detail=reason)
        return run


async def _audit(
    tx: Transaction,
    entry: AuditEntry | None,
    *,
    task: str,
    run_id: str | None = None,
    detail: str,
) -> None:
    """Record the call's entry in `tx`, with what only the change knows."""
    if entry is not None:
        await audit.record(tx, replace(entry, task=task, run_id=run_id, detail=detail))


def merge_params(spec: TaskSpec, overrides: Mapping[str, str]) -> dict[str, str]:
    """Task defaults overridden by a run's params; an undeclared name is refused."""
    unknown = sorted(set(overrides) - set(spec.params))
    if unknown:
        declared = ", ".join(sorted(spec.params)) or "none"
        raise InvalidArgument(
            [
                FieldProblem(
                    path=f"params.{name}",
                    message=f"task {spec.name} declares no such parameter (declared: {declared})",
                )
                for name in unknown
            ]
        )
    return {**spec.params, **overrides}


async def backfill(
    database: Database,
    dispatcher: Dispatcher,
    task_name: str,
    *,
    start: datetime,
    end: datetime,
    dry_run: bool,
    audit_entry: AuditEntry | None = None,
) -> BackfillResult:
    """Runs for every occurrence of the task's time triggers in [start, end];
    occurrences that already have a run are left alone."""
    if end < start:
        raise InvalidArgument("must not be before from", path="to")
    task_id, task = await database.run(tasks.task_ref, task_name)
    found = backfill_occurrences(task.spec, start, end)
    if dry_run:
        return BackfillResult(occurrences=found, created=[], existing=0)
    new_runs = [
        NewRun(
            task_id=task_id,
            task_version=task.version,
            spec=task.spec,
            occurrence=o,
            cause=RunCause.BACKFILL,
            params=task.spec.params,
            timezone=task.spec.timezone,
        )
        for o in found
    ]
    async with database.transaction() as tx:
        created_ids = await runs.insert_runs(tx, new_runs)
        detail = f"{len(created_ids)} runs, {len(found) - len(created_ids)} existing"
        await _audit(tx, audit_entry, task=task_name, detail=detail)
        await dispatcher.lease_available(tx)
    created = await database.run(runs.get_runs, created_ids)
    return BackfillResult(occurrences=found, created=created, existing=len(found) - len(created))


def backfill_occurrences(spec: TaskSpec, start: datetime, end: datetime) -> list[datetime]:
    """Every occurrence of the spec's time triggers in [start, end], merged and sorted."""
    positions = [i for i, t in enumerate(spec.triggers) if not isinstance(t, After)]
    if not positions:
        raise FailedPrecondition(f"task {spec.name} has no time triggers to backfill")
    found: set[datetime] = set()
    for position in positions:
        trigger = schedule.time_trigger(spec, position, anchor=start)
        found.update(itertools.islice(schedule.occurrences(trigger, start, end), MAX_BACKFILL + 1))
    if len(found) > MAX_BACKFILL:
        raise InvalidArgument(f"covers more than {MAX_BACKFILL} occurrences; split it", path="to")
    return sorted(found)
