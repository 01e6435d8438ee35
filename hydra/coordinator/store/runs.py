"""Runs: creating them (once per task and occurrence), the rules that apply as
they are created or end — the overlap policy, dependency (`after`) resolution,
the cycle check — reading, retrying, cancelling, and their stored output. Every
function works in the caller's transaction.

Fan-in is race-free because resolution locks the downstream task's row before
it looks at its upstreams' runs: two upstreams succeeding at once on two
coordinators are serialised there, and the second sees the first's commit.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from psycopg.types.json import Jsonb

from hydra.coordinator.agents.commands import AgentCommand
from hydra.coordinator.store import occurrences
from hydra.coordinator.store.records import NewRun, OutputRecord, SkippedRange
from hydra.coordinator.store.rows import run_from_row
from hydra.coordinator.store.transaction import Row, Transaction
from hydra.domain import After, LeaseKey, Overlap, Run, RunCause, RunState, TaskSpec
from hydra.errors import FailedPrecondition, NotFound, Unavailable
from hydra.occurrences import SkipReason

log = logging.getLogger("hydra.coordinator.runs")

_BROKEN = frozenset({RunState.FAILED.value, RunState.CANCELLED.value, RunState.SKIPPED.value})


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
    rows = await tx.all("insert_runs", **_run_columns(new_runs), guard_version=None)
    return await _inserted(tx, new_runs, rows)


async def _inserted(tx: Transaction, new_runs: Sequence[NewRun], rows: list[Row]) -> list[str]:
    """What creating `rows` (of `new_runs`; ``insert_runs``' answer) sets off: metrics,
    overlap, announcements. Returns the ids created."""
    rows = [row for row in rows if row["id"] is not None]
    by_key = {(r.task_id, r.occurrence): r for r in new_runs}
    for row in rows:
        new_run = by_key[(row["task_id"], row["occurrence"])]
        tx.metrics.run_created(new_run.spec.name, new_run.cause.value)
        if new_run.cause.scheduled:
            await apply_overlap(tx, str(row["id"]), new_run.task_id, new_run.spec)
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
    return await _existing(tx, new_run), False


async def create_or_find_if_current(tx: Transaction, new_run: NewRun) -> tuple[str, bool] | None:
    """`create_or_find` for a run built from a task read in an earlier transaction, in
    one statement with the check that its version is still the task's current one;
    None (nothing changed) if it is not."""
    rows = await tx.all(
        "insert_runs", **_run_columns([new_run]), guard_version=new_run.task_version
    )
    if not rows[0]["current"]:
        return None
    created = await _inserted(tx, [new_run], rows)
    if created:
        return created[0], True
    return await _existing(tx, new_run), False


async def _existing(tx: Transaction, new_run: NewRun) -> str:
    """The run a manual run's idempotency key or occurrence already has."""
    row = None
    if new_run.idempotency_key:
        row = await tx.one("find_run_by_key", task_id=new_run.task_id, key=new_run.idempotency_key)
    if row is None:
        row = await tx.one(
            "find_run_by_occurrence", task_id=new_run.task_id, occurrence=new_run.occurrence
        )
    if row is None:  # pragma: no cover - a conflict always leaves a row behind
        raise Unavailable("run creation conflicted; try again")
    return str(row["id"])


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


async def get_runs_with_attempts(tx: Transaction, run_ids: Sequence[str]) -> list[Run]:
    """Several runs with every attempt, in two queries, oldest occurrence first; ids
    without a run are left out."""
    rows = await tx.all("get_runs", ids=list(run_ids))
    attempts: dict[str, list[Row]] = {str(row["id"]): [] for row in rows}
    if rows:
        for attempt in await tx.all("get_attempts_of_runs", run_ids=list(attempts)):
            attempts[str(attempt["run_id"])].append(attempt)
    return [run_from_row(row, attempts[str(row["id"])]) for row in rows]


async def list_runs(
    tx: Transaction,
    *,
    task: str,
    states: Sequence[RunState],
    after: tuple[datetime, str] | None,
    limit: int,
    task_prefix: str = "",
    occurrence_from: datetime | None = None,
    occurrence_to: datetime | None = None,
) -> list[Run]:
    """A page of runs, newest occurrence first (of tasks named with `task_prefix`),
    with occurrences in [`occurrence_from`, `occurrence_to`) when given. Each filter
    has a query of its own, so that each reads an index from its newest entry."""
    params = {
        "task": task,
        "task_prefix": _like_prefix(task_prefix),
        "states": [s.value for s in states],
        "after_occurrence": after[0] if after else None,
        "after_id": after[1] if after else None,
        "limit": limit,
        "occurrence_from": occurrence_from,
        "occurrence_to": occurrence_to,
    }
    if task:
        rows = await tx.all("list_runs_of_task", **params)
    elif states:
        rows = await tx.all("list_runs_in_states", **params)
    else:
        rows = await tx.all("list_runs", **params)
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
        command = AgentCommand.cancel(run["lease_owner"], LeaseKey(run_id, run["lease_token"]))
        await tx.execute("notify_agent_command", payload=command.encode())
    task = await tx.one("run_spec", run_id=run_id)
    assert task is not None
    tx.metrics.run_finished(task["task_name"], RunState.CANCELLED.value)
    if run["state"] == RunState.RUNNING.value:
        tx.metrics.attempt_finished(task["task_name"], RunState.CANCELLED.value, None)
    await after_terminal(tx, task["task_name"], task["occurrence"], task["timezone"])


async def lock_run(tx: Transaction, run_id: str) -> Row:
    """Lock one run's row; NOT_FOUND if there is none."""
    row = await tx.one("lock_runs", ids=[run_uuid(run_id)])
    if row is None:
        raise NotFound(f"run {run_id!r} not found")
    return row


async def skip(tx: Transaction, run_id: str, reason: str, *, task: str) -> None:
    """End a queued run of `task` that never ran as SKIPPED."""
    await tx.execute("skip_run", id=run_id, reason=reason)
    tx.runs_changed([run_id])
    tx.metrics.run_finished(task, RunState.SKIPPED.value)


async def read_output(
    tx: Transaction, run_id: str, *, after_seq: int, attempt: int
) -> list[OutputRecord]:
    """Stored output chunks of a run after a sequence number."""
    rows = await tx.all(
        "read_output", run_id=run_uuid(run_id), after_seq=after_seq, attempt=attempt
    )
    return [
        OutputRecord(
            seq=r["seq"],
            attempt=r["attempt"],
            stream=r["stream"],
            data=bytes(r["data"]),
            dropped_bytes=r["dropped_bytes"],
        )
        for r in rows
    ]


# --- rules applied as runs are created and end ---------------------------------------


class Occurrence(NamedTuple):
    """An occurrence and the zone templates show it in."""

    instant: datetime
    timezone: str


async def after_terminal(
    tx: Transaction, task_name: str, occurrence: datetime, timezone: str
) -> None:
    """A run of `task_name` ended: create, skip or re-open its dependents' runs.
    Dependents show the occurrence in the upstream run's zone: a pipeline sees one day."""
    await after_terminals(tx, [(task_name, Occurrence(occurrence, timezone))])


async def after_terminals(tx: Transaction, ended: Sequence[tuple[str, Occurrence]]) -> None:
    """Runs of these tasks ended (in this order): `after_terminal` for each, with the
    dependents of all of them locked by one statement first, in id order, so that two
    batches of ends never lock dependents in crossing orders."""
    if not ended:
        return
    names = list(dict.fromkeys(task_name for task_name, _ in ended))
    dependents = await tx.all("lock_dependents", names=names)
    for task_name, occurrence in ended:
        for row in dependents:
            if task_name not in row["upstreams"]:
                continue
            spec = tx.spec(row["id"], row["version"], row["spec"])
            for position, upstreams in _after_groups(spec, task_name):
                await _resolve(tx, row, spec, (position, upstreams), occurrence)


async def _resolve(
    tx: Transaction,
    task: Row,
    spec: TaskSpec,
    trigger: tuple[int, Sequence[str]],
    occurrence: Occurrence,
) -> None:
    position, upstreams = trigger
    rows = await tx.all(
        "run_states_for_occurrence", names=list(upstreams), occurrence=occurrence.instant
    )
    states = {r["name"]: r["state"] for r in rows}
    broken = next((n for n in upstreams if states.get(n) in _BROKEN), None)
    if broken is None and any(states.get(n) != "SUCCEEDED" for n in upstreams):
        return  # still waiting for an upstream
    existing = await tx.one("run_of_task_at", task_id=task["id"], occurrence=occurrence.instant)
    if task["paused"]:  # a paused task's `after` trigger drops the occurrence
        if existing is None:
            drop = _paused_drop(task, position, occurrence.instant)
            await occurrences.record_skipped(tx, [drop])
        return
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
    await skip(tx, run_id, reason, task=task["name"])
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
    created = await insert_runs(tx, [new_run])
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
        await skip(
            tx,
            run_id,
            f"overlap: {len(others)} run(s) already queued or active (max_active_runs {limit})",
            task=spec.name,
        )
        return
    for other in others[: len(others) - limit + 1]:
        await cancel_locked(tx, other, f"replaced by run {run_id} (overlap: replace)")


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


def _after_groups(spec: TaskSpec, upstream: str) -> Iterable[tuple[int, tuple[str, ...]]]:
    """The `after` triggers naming `upstream`: their position and upstream tasks."""
    return (
        (position, t.tasks)
        for position, t in enumerate(spec.triggers)
        if isinstance(t, After) and upstream in t.tasks
    )


def _paused_drop(task: Row, position: int, occurrence: datetime) -> SkippedRange:
    return SkippedRange(
        task_id=task["id"],
        trigger_position=position,
        reason=SkipReason.PAUSED,
        first=occurrence,
        last=occurrence,
        count=1,
        detail="its upstreams finished while the task was paused",
    )


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


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching every text that starts with `prefix`."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
