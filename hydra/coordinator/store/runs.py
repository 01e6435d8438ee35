"""Runs: creating them (once per task and occurrence), reading, retrying,
cancelling, and their stored output. Every function works in the caller's
transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from hydra.coordinator.agents.commands import AgentCommand
from hydra.coordinator.store import dependencies
from hydra.coordinator.store.records import NewRun, OutputRecord
from hydra.coordinator.store.rows import run_from_row
from hydra.coordinator.store.transaction import Row, Transaction
from hydra.domain import Run, RunState
from hydra.errors import FailedPrecondition, NotFound, Unavailable


def run_uuid(run_id: str) -> str:
    """Validate a run id's shape so a typo is NOT_FOUND, not a database error."""
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        raise NotFound(f"run {run_id!r} not found (run ids are UUIDs)") from None


async def insert_runs(tx: Transaction, new_runs: Sequence[NewRun]) -> list[str]:
    """Create runs; pairs (task, occurrence) that exist are left alone. Returns new ids.
    Scheduled runs meet their task's overlap policy here."""
    if not new_runs:
        return []
    rows = await tx.all("insert_runs", **_run_columns(new_runs))
    by_key = {(r.task_id, r.occurrence): r for r in new_runs}
    for row in rows:
        new_run = by_key[(row["task_id"], row["occurrence"])]
        if new_run.cause.scheduled:
            await dependencies.apply_overlap(tx, str(row["id"]), new_run.task_id, new_run.spec)
    created = [str(row["id"]) for row in rows]
    tx.runs_changed(created)
    if rows:
        tx.work_available()
    return created


async def create_or_find(tx: Transaction, new_run: NewRun) -> tuple[str, bool]:
    """A manual run: created, or the one its idempotency key or occurrence already has.
    Returns its id and whether it was created."""
    created = await insert_runs(tx, [new_run])
    if created:
        return created[0], True
    row = None
    if new_run.idempotency_key:
        row = await tx.one("find_run_by_key", task_id=new_run.task_id, key=new_run.idempotency_key)
    if row is None:
        row = await tx.one(
            "find_run_by_occurrence", task_id=new_run.task_id, occurrence=new_run.occurrence
        )
    if row is None:  # pragma: no cover - a conflict always leaves a row behind
        raise Unavailable("run creation conflicted; try again")
    return str(row["id"]), False


async def get_run(tx: Transaction, run_id: str) -> Run:
    """One run with every attempt."""
    row = await tx.one("get_run", id=run_uuid(run_id))
    if row is None:
        raise NotFound(f"run {run_id!r} not found")
    attempts = await tx.all("get_attempts", run_id=row["id"])
    return run_from_row(row, attempts)


async def get_runs(tx: Transaction, run_ids: Sequence[str]) -> list[Run]:
    """Several runs in one query, without their attempts, oldest occurrence first."""
    rows = await tx.all("get_runs", ids=list(run_ids))
    return [run_from_row(row, []) for row in rows]


async def list_runs(
    tx: Transaction,
    *,
    task: str,
    states: Sequence[RunState],
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Run]:
    """A page of runs, newest occurrence first."""
    rows = await tx.all(
        "list_runs",
        task=task,
        states=[s.value for s in states],
        after_occurrence=after[0] if after else None,
        after_id=after[1] if after else None,
        limit=limit,
    )
    return [run_from_row(row, []) for row in rows]


async def retry_run(tx: Transaction, run_id: str) -> None:
    """Queue a finished run for one more attempt; a succeeded run is refused."""
    row = await lock_run(tx, run_id)
    state = RunState(row["state"])
    if state is RunState.SUCCEEDED:
        raise FailedPrecondition(
            f"run {run_id} succeeded; a run succeeds at most once, so it cannot be retried"
        )
    if not state.terminal:
        raise FailedPrecondition(
            f"run {run_id} is {state.value}; only finished runs can be retried"
        )
    await tx.execute("requeue_run_for_retry", id=row["id"])
    tx.runs_changed([run_id])
    tx.work_available()


async def cancel_run(tx: Transaction, run_id: str, reason: str) -> None:
    """Cancel a queued or active run; the agent running it is told to kill it."""
    row = await lock_run(tx, run_id)
    state = RunState(row["state"])
    if state.terminal:
        raise FailedPrecondition(f"run {run_id} is already {state.value}")
    await cancel_locked(tx, row, reason)


async def cancel_locked(tx: Transaction, run: Row, reason: str) -> None:
    """Cancel a locked, queued or active run; its agent is told to kill the attempt,
    and its dependents learn that it ended."""
    run_id = str(run["id"])
    await tx.execute("cancel_run", id=run_id, reason=reason)
    await tx.execute("cancel_running_attempt", run_id=run_id, reason=reason)
    tx.runs_changed([run_id])
    if RunState(run["state"]).active:  # the agent's coordinator tells it to kill it now
        command = AgentCommand.cancel(run["lease_owner"], (run_id, run["lease_token"]))
        await tx.execute("notify_agent_command", payload=command.encode())
    task = await tx.one("run_spec", run_id=run_id)
    assert task is not None
    await dependencies.after_terminal(tx, task["task_name"], task["occurrence"], task["timezone"])


async def lock_run(tx: Transaction, run_id: str) -> Row:
    """Lock one run's row; NOT_FOUND if there is none."""
    row = await tx.one("lock_runs", ids=[run_uuid(run_id)])
    if row is None:
        raise NotFound(f"run {run_id!r} not found")
    return row


async def skip(tx: Transaction, run_id: str, reason: str) -> None:
    """End a run that never ran as SKIPPED."""
    await tx.execute("skip_run", id=run_id, reason=reason)
    tx.runs_changed([run_id])


async def read_output(
    tx: Transaction, run_id: str, *, after_seq: int, attempt: int
) -> list[OutputRecord]:
    """Stored output chunks of a run after a sequence number."""
    rows = await tx.all(
        "read_output", run_id=run_uuid(run_id), after_seq=after_seq, attempt=attempt
    )
    return [
        OutputRecord(seq=r["seq"], attempt=r["attempt"], stream=r["stream"], data=bytes(r["data"]))
        for r in rows
    ]


def _run_columns(new_runs: Sequence[NewRun]) -> dict[str, list[Any]]:
    retry = [r.spec.retry for r in new_runs]
    return {
        "task_ids": [r.task_id for r in new_runs],
        "task_versions": [r.task_version for r in new_runs],
        "occurrences": [r.occurrence for r in new_runs],
        "causes": [r.cause.value for r in new_runs],
        "params": [Jsonb(dict(r.params)) for r in new_runs],
        "selectors": [Jsonb(dict(r.spec.selector)) for r in new_runs],
        "max_attempts": [p.max_attempts for p in retry],
        "backoff_seconds": [p.backoff.total_seconds() for p in retry],
        "backoff_multipliers": [p.multiplier for p in retry],
        "max_backoff_seconds": [p.max_backoff.total_seconds() for p in retry],
        "idempotency_keys": [r.idempotency_key for r in new_runs],
        "timezones": [r.timezone for r in new_runs],
    }
