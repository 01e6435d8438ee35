"""The store: the only module that executes SQL.

Each public method is one transaction. Rows become domain types here; callers
never see SQL or cursors. Lease-related statements live in
:mod:`hydra.coordinator.lease_store`, which extends this class.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from hydra.coordinator.dependencies import SCHEDULED_CAUSES, DependencyStore, Occurrence
from hydra.coordinator.records import (
    ApplyOutcome,
    DueTrigger,
    FirePlan,
    NewRun,
    OutputRecord,
    TriggerRow,
)
from hydra.coordinator.store_base import Cursor, Row, open_pool, run_uuid, spec_of_version
from hydra.domain import (
    Agent,
    Attempt,
    AttemptState,
    Coordinator,
    Cron,
    PreconditionVerdict,
    Run,
    RunState,
    Task,
    TaskSpec,
    TaskVersion,
)
from hydra.errors import FailedPrecondition, NotFound, Unavailable
from hydra.spec import task_from_dict, task_to_dict

__all__ = ["Cursor", "Row", "Store", "open_pool", "run_uuid"]


class Store(DependencyStore):
    """Tasks, triggers and runs."""

    # ------------------------------------------------------------- tasks --

    async def apply_task(
        self, spec: TaskSpec, triggers: Sequence[TriggerRow], *, dry_run: bool
    ) -> ApplyOutcome:
        """Create the task or a new version; an identical spec changes nothing."""
        spec_json = task_to_dict(spec)
        async with self.transaction() as cur:
            if any(trigger.kind == "after" for trigger in triggers):
                await self.check_no_cycle(cur, spec)
            row = await self._lock_or_create_task(cur, spec.name, dry_run=dry_run)
            if row is not None and row["spec"] == spec_json:
                return ApplyOutcome(
                    task_id=row["id"],
                    version=row["version"],
                    changed=False,
                    previous_version=row["version"],
                )
            previous = row["version"] if row is not None else 0
            outcome = ApplyOutcome(
                task_id=row["id"] if row is not None else 0,
                version=previous + 1,
                changed=True,
                previous_version=previous,
            )
            if dry_run:
                return outcome
            assert row is not None
            await self._store_version(cur, row, outcome.version, spec_json, triggers)
            return outcome

    async def _lock_or_create_task(self, cur: Cursor, name: str, *, dry_run: bool) -> Row | None:
        row = await self.one(cur, "lock_task_by_name", name=name)
        if row is not None or dry_run:
            return row
        created = await self.one(cur, "insert_task", name=name)
        if created is None:  # applied concurrently: take the winner's row
            return await self.one(cur, "lock_task_by_name", name=name)
        return {"id": created["id"], "version": 0, "paused": False, "spec": None, "new": True}

    async def _store_version(
        self, cur: Cursor, row: Row, version: int, spec_json: Row, triggers: Sequence[TriggerRow]
    ) -> None:
        task_id = row["id"]
        await self.run_query(
            cur, "insert_task_version", task_id=task_id, version=version, spec=Jsonb(spec_json)
        )
        await self.run_query(cur, "set_task_version", task_id=task_id, version=version)
        for trigger in triggers:
            await self.run_query(
                cur,
                "upsert_trigger",
                task_id=task_id,
                position=trigger.position,
                kind=trigger.kind,
                spec=Jsonb(dict(trigger.spec)),
                next_fire_at=trigger.next_fire_at,
                paused=row["paused"],
            )
        await self.run_query(cur, "delete_triggers_from", task_id=task_id, count=len(triggers))
        await self.run_query(cur, "notify_triggers")

    async def get_task(self, name: str) -> Task:
        """The live task with this name."""
        async with self.transaction() as cur:
            row = await self.one(cur, "get_task", name=name)
        if row is None:
            raise NotFound(f"task {name!r} not found")
        return task_from_row(row)

    async def get_task_versions(self, name: str) -> tuple[Task, list[TaskVersion]]:
        """The task and every version of its spec, newest first."""
        async with self.transaction() as cur:
            row = await self.one(cur, "get_task", name=name)
            if row is None:
                raise NotFound(f"task {name!r} not found")
            versions = await self.all(cur, "list_task_versions", task_id=row["id"])
        return task_from_row(row), [
            TaskVersion(
                version=v["version"], spec=task_from_dict(v["spec"]), created_at=v["created_at"]
            )
            for v in versions
        ]

    async def list_tasks(self, *, after: str, prefix: str, limit: int) -> list[Task]:
        """A page of live tasks ordered by name."""
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        async with self.transaction() as cur:
            rows = await self.all(cur, "list_tasks", after=after, prefix=like, limit=limit)
        return [task_from_row(row) for row in rows]

    async def set_paused(
        self,
        name: str,
        paused: bool,
        *,
        reschedule: Callable[[int, datetime | None], datetime | None] | None = None,
    ) -> Task:
        """Pause or resume a task's triggers; `reschedule(position, next_fire_at)` may
        move each time trigger's next occurrence in the same transaction."""
        async with self.transaction() as cur:
            if await self.one(cur, "set_task_paused", name=name, paused=paused) is None:
                raise NotFound(f"task {name!r} not found")
            if reschedule is not None:
                for row in await self.all(cur, "time_triggers_of_task", name=name):
                    await self.run_query(
                        cur,
                        "set_trigger_next_fire",
                        id=row["id"],
                        next_fire_at=reschedule(row["position"], row["next_fire_at"]),
                    )
            await self.run_query(cur, "notify_triggers")
        return await self.get_task(name)

    async def delete_task(self, name: str, *, force: bool) -> int:
        """Delete a task, cancelling its queued runs; refused if others depend on it."""
        async with self.transaction() as cur:
            row = await self.one(cur, "lock_task_by_name", name=name)
            if row is None:
                raise NotFound(f"task {name!r} not found")
            dependents = [
                r["name"]
                for r in await self.all(cur, "dependents_of", name=name)
                if r["name"] != name
            ]
            if dependents and not force:
                raise FailedPrecondition(
                    f"task {name!r} is a dependency of {', '.join(dependents)}; "
                    "delete those first or force"
                )
            cancelled = await self.all(
                cur, "cancel_queued_runs_of_task", task_id=row["id"], reason="task deleted"
            )
            await self.run_query(cur, "delete_task", task_id=row["id"])
        return len(cancelled)

    async def task_ref(self, name: str) -> tuple[int, Task]:
        """The id and current state of the live task with this name."""
        async with self.transaction() as cur:
            row = await self.one(cur, "get_task", name=name)
        if row is None:
            raise NotFound(f"task {name!r} not found")
        return int(row["id"]), task_from_row(row)

    # ---------------------------------------------------------- triggers --

    async def fire_due_triggers(
        self, now: datetime, limit: int, plan: Callable[[DueTrigger], FirePlan]
    ) -> int:
        """Create runs for due triggers and advance them, in one transaction.

        Returns how many triggers were due (the caller loops while it is `limit`).
        """
        async with self.transaction() as cur:
            rows = await self.all(cur, "claim_due_triggers", now=now, limit=limit)
            if not rows:
                return 0
            new_runs: list[NewRun] = []
            ids, nexts, lasts = [], [], []
            for row in rows:
                due = _due_trigger(row)
                fire = plan(due)
                new_runs.extend(
                    NewRun(
                        task_id=due.task_id,
                        task_version=due.task_version,
                        spec=due.task_spec,
                        occurrence=occurrence,
                        cause=row["kind"],
                        params=due.task_spec.params,
                        timezone=_trigger_zone(due),
                    )
                    for occurrence in fire.occurrences
                )
                ids.append(due.trigger_id)
                nexts.append(fire.next_fire_at)
                lasts.append(fire.last_fired_at)
            await self.run_query(
                cur, "advance_triggers", ids=ids, next_fire_ats=nexts, last_fired_ats=lasts
            )
            await self._insert_runs(cur, new_runs)
        return len(rows)

    async def next_trigger_fire(self) -> datetime | None:
        """The earliest next fire time over every active trigger."""
        async with self.transaction() as cur:
            row = await self.one(cur, "next_trigger_fire")
        return row["next_fire_at"] if row else None

    # -------------------------------------------------------------- runs --

    async def create_runs(self, new_runs: Sequence[NewRun]) -> list[str]:
        """Create runs; pairs (task, occurrence) that exist are left alone. Returns new ids."""
        async with self.transaction() as cur:
            return await self._insert_runs(cur, new_runs)

    async def _insert_runs(self, cur: Cursor, new_runs: Sequence[NewRun]) -> list[str]:
        if not new_runs:
            return []
        rows = await self.all(cur, "insert_runs", **_run_columns(new_runs))
        by_key = {(r.task_id, r.occurrence): r for r in new_runs}
        for row in rows:
            new_run = by_key[(row["task_id"], row["occurrence"])]
            if new_run.cause in SCHEDULED_CAUSES:
                await self.apply_overlap(cur, str(row["id"]), new_run.task_id, new_run.spec)
        created = [str(row["id"]) for row in rows]
        self.notify_runs_changed(cur, created)
        if rows:
            self.notify_dispatch(cur)
        return created

    async def insert_dependent_run(
        self, cur: Cursor, task: Row, spec: TaskSpec, occurrence: Occurrence
    ) -> str:
        """Create the run of a dependent task for an occurrence; returns its id."""
        new_run = NewRun(
            task_id=task["id"],
            task_version=task["version"],
            spec=spec,
            occurrence=occurrence.instant,
            cause="after",
            params=spec.params,
            timezone=occurrence.timezone,
        )
        created = await self._insert_runs(cur, [new_run])
        if created:
            return created[0]
        existing = await self.one(
            cur, "run_of_task_at", task_id=task["id"], occurrence=occurrence.instant
        )
        assert existing is not None
        return str(existing["id"])

    async def create_manual_run(self, new_run: NewRun) -> tuple[Run, bool]:
        """Create a manual run, or return the one its key or occurrence already has."""
        async with self.transaction() as cur:
            run_id, created = await self._create_or_find(cur, new_run)
        return await self.get_run(run_id), created

    async def trigger_task(
        self, name: str, build: Callable[[int, Task], NewRun]
    ) -> tuple[Run, bool]:
        """`create_manual_run` for the run `build(task_id, task)` describes, reading the
        live task in the same transaction (one commit from Trigger to lease)."""
        async with self.transaction() as cur:
            row = await self.one(cur, "get_task", name=name)
            if row is None:
                raise NotFound(f"task {name!r} not found")
            run_id, created = await self._create_or_find(cur, build(row["id"], task_from_row(row)))
        return await self.get_run(run_id), created

    async def _create_or_find(self, cur: Cursor, new_run: NewRun) -> tuple[str, bool]:
        created = await self._insert_runs(cur, [new_run])
        if created:
            return created[0], True
        row = None
        if new_run.idempotency_key:
            row = await self.one(
                cur, "find_run_by_key", task_id=new_run.task_id, key=new_run.idempotency_key
            )
        if row is None:
            row = await self.one(
                cur,
                "find_run_by_occurrence",
                task_id=new_run.task_id,
                occurrence=new_run.occurrence,
            )
        if row is None:  # pragma: no cover - a conflict always leaves a row behind
            raise Unavailable("run creation conflicted; try again")
        return str(row["id"]), False

    async def get_run(self, run_id: str) -> Run:
        """One run with every attempt."""
        async with self.transaction() as cur:
            row = await self.one(cur, "get_run", id=run_uuid(run_id))
            if row is None:
                raise NotFound(f"run {run_id!r} not found")
            attempts = await self.all(cur, "get_attempts", run_id=row["id"])
        return run_from_row(row, attempts)

    async def get_runs(self, run_ids: Sequence[str]) -> list[Run]:
        """Several runs in one query, without their attempts, oldest occurrence first."""
        async with self.transaction() as cur:
            rows = await self.all(cur, "get_runs", ids=list(run_ids))
        return [run_from_row(row, []) for row in rows]

    async def list_runs(
        self,
        *,
        task: str,
        states: Sequence[RunState],
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Run]:
        """A page of runs, newest occurrence first."""
        async with self.transaction() as cur:
            rows = await self.all(
                cur,
                "list_runs",
                task=task,
                states=[s.value for s in states],
                after_occurrence=after[0] if after else None,
                after_id=after[1] if after else None,
                limit=limit,
            )
        return [run_from_row(row, []) for row in rows]

    async def retry_run(self, run_id: str) -> Run:
        """Queue a finished run for one more attempt; a succeeded run is refused."""
        async with self.transaction() as cur:
            row = await self._lock_run(cur, run_id)
            state = RunState(row["state"])
            if state is RunState.SUCCEEDED:
                raise FailedPrecondition(
                    f"run {run_id} succeeded; a run succeeds at most once, so it cannot be retried"
                )
            if not state.terminal:
                raise FailedPrecondition(
                    f"run {run_id} is {state.value}; only finished runs can be retried"
                )
            await self.run_query(cur, "requeue_run_for_retry", id=row["id"])
            self.notify_runs_changed(cur, [run_id])
            self.notify_dispatch(cur)
        return await self.get_run(run_id)

    async def cancel_run(self, run_id: str, reason: str) -> Run:
        """Cancel a queued or active run; the agent running it is told to kill it."""
        async with self.transaction() as cur:
            row = await self._lock_run(cur, run_id)
            state = RunState(row["state"])
            if state.terminal:
                raise FailedPrecondition(f"run {run_id} is already {state.value}")
            await self.cancel_in_transaction(cur, row, reason)
        return await self.get_run(run_id)

    async def cancel_in_transaction(self, cur: Cursor, run: Row, reason: str) -> None:
        """Cancel a queued or active run; its agent is told to kill the attempt."""
        run_id = str(run["id"])
        await self.run_query(cur, "cancel_run", id=run_id, reason=reason)
        await self.run_query(cur, "cancel_running_attempt", run_id=run_id, reason=reason)
        self.notify_runs_changed(cur, [run_id])
        if RunState(run["state"]).active:  # the agent's coordinator tells it to kill it now
            payload = f"cancel:{run['lease_owner']}:{run_id}:{run['lease_token']}"
            await self.run_query(cur, "notify_agent_command", payload=payload)
        task = await self.one(cur, "run_spec", run_id=run_id)
        assert task is not None
        await self.after_terminal(cur, task["task_name"], task["occurrence"], task["timezone"])

    async def _lock_run(self, cur: Cursor, run_id: str) -> Row:
        row = await self.one(cur, "lock_runs", ids=[run_uuid(run_id)])
        if row is None:
            raise NotFound(f"run {run_id!r} not found")
        return row

    async def read_output(self, run_id: str, *, after_seq: int, attempt: int) -> list[OutputRecord]:
        """Stored output chunks of a run after a sequence number."""
        async with self.transaction() as cur:
            rows = await self.all(
                cur, "read_output", run_id=run_uuid(run_id), after_seq=after_seq, attempt=attempt
            )
        return [
            OutputRecord(
                seq=r["seq"], attempt=r["attempt"], stream=r["stream"], data=bytes(r["data"])
            )
            for r in rows
        ]

    # ------------------------------------------------------------ agents --

    async def list_agents(self, *, include_disconnected: bool) -> list[Agent]:
        """Known agents."""
        async with self.transaction() as cur:
            rows = await self.all(cur, "list_agents", include_disconnected=include_disconnected)
        return [agent_from_row(row) for row in rows]

    async def drain_agent(self, agent_id: str) -> Agent:
        """Mark an agent draining and tell its coordinator."""
        async with self.transaction() as cur:
            if await self.one(cur, "set_agent_draining", id=agent_id) is None:
                raise NotFound(f"agent {agent_id!r} not found or not connected")
            await self.run_query(cur, "notify_agent_command", payload=f"drain:{agent_id}")
            row = await self.one(cur, "get_agent", id=agent_id)
        assert row is not None
        return agent_from_row(row)

    async def register_coordinator(self, coordinator_id: str, address: str, version: str) -> None:
        """Record this coordinator as alive (called periodically)."""
        async with self.transaction() as cur:
            await self.run_query(
                cur, "register_coordinator", id=coordinator_id, address=address, version=version
            )

    async def list_coordinators(self, window: timedelta) -> list[Coordinator]:
        """Coordinators that recorded themselves alive within the window."""
        async with self.transaction() as cur:
            rows = await self.all(cur, "list_coordinators", window=window)
        return [
            Coordinator(
                id=r["id"],
                address=r["address"],
                version=r["version"],
                started_at=r["started_at"],
                last_heartbeat_at=r["last_heartbeat_at"],
                agents_connected=r["agents_connected"],
            )
            for r in rows
        ]

    async def forget_dead_coordinators(self, window: timedelta) -> None:
        """Forget coordinators silent for longer than the window; disconnect their agents."""
        async with self.transaction() as cur:
            await self.run_query(cur, "forget_dead_coordinators", window=window)

    async def unregister_coordinator(self, coordinator_id: str) -> None:
        """This coordinator stops; its agents are disconnected from it."""
        async with self.transaction() as cur:
            await self.run_query(cur, "disconnect_agents_of_coordinator", id=coordinator_id)
            await self.run_query(cur, "unregister_coordinator", id=coordinator_id)


# ------------------------------------------------------------ row mapping --


def _due_trigger(row: Row) -> DueTrigger:
    return DueTrigger(
        trigger_id=row["id"],
        task_id=row["task_id"],
        task_name=row["name"],
        task_version=row["version"],
        task_spec=spec_of_version(row["task_id"], row["version"], row["task_spec"]),
        position=row["position"],
        next_fire_at=row["next_fire_at"],
        last_fired_at=row["last_fired_at"],
    )


def _trigger_zone(due: DueTrigger) -> str:
    trigger = due.task_spec.triggers[due.position]
    return trigger.timezone or "UTC" if isinstance(trigger, Cron) else due.task_spec.timezone


def _run_columns(new_runs: Sequence[NewRun]) -> dict[str, list[Any]]:
    retry = [r.spec.retry for r in new_runs]
    return {
        "task_ids": [r.task_id for r in new_runs],
        "task_versions": [r.task_version for r in new_runs],
        "occurrences": [r.occurrence for r in new_runs],
        "causes": [r.cause for r in new_runs],
        "params": [Jsonb(dict(r.params)) for r in new_runs],
        "selectors": [Jsonb(dict(r.spec.selector)) for r in new_runs],
        "max_attempts": [p.max_attempts for p in retry],
        "backoff_seconds": [p.backoff.total_seconds() for p in retry],
        "backoff_multipliers": [p.multiplier for p in retry],
        "max_backoff_seconds": [p.max_backoff.total_seconds() for p in retry],
        "idempotency_keys": [r.idempotency_key for r in new_runs],
        "timezones": [r.timezone for r in new_runs],
    }


def task_from_row(row: Mapping[str, Any]) -> Task:
    """A domain Task from a tasks row joined with its current version."""
    return Task(
        name=row["name"],
        version=row["version"],
        paused=row["paused"],
        spec=spec_of_version(row["id"], row["version"], row["spec"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        next_fire_at=row.get("next_fire_at"),
    )


def run_from_row(row: Mapping[str, Any], attempts: Sequence[Mapping[str, Any]]) -> Run:
    """A domain Run from a runs row (joined with the task name) and its attempts."""
    outputs = row["outputs"]
    return Run(
        id=str(row["id"]),
        task=row["task_name"],
        task_version=row["task_version"],
        occurrence=row["occurrence"],
        state=RunState(row["state"]),
        cause=row["cause"],
        created_at=row["created_at"],
        not_before=row["not_before"],
        params=row["params"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        attempts_used=row["attempts_used"],
        max_attempts=row["max_attempts"],
        reason=row["reason"],
        agent=row["lease_owner"] or "" if RunState(row["state"]).active else "",
        attempts=tuple(attempt_from_row(a) for a in attempts),
        outputs_json=json.dumps(outputs, sort_keys=True) if outputs is not None else "",
        idempotency_key=row["idempotency_key"] or "",
        precondition_checks=row["precondition_checks"],
        precondition_verdicts=tuple(_verdict(v) for v in row["precondition_verdicts"]),
        first_checked_at=row["first_checked_at"],
    )


def _verdict(data: Mapping[str, Any]) -> PreconditionVerdict:
    checked_at = data.get("checked_at")
    return PreconditionVerdict(
        index=data["index"],
        ready=data["ready"],
        message=data.get("message", ""),
        checked_at=datetime.fromisoformat(checked_at) if checked_at else None,
    )


def attempt_from_row(row: Mapping[str, Any]) -> Attempt:
    """A domain Attempt from an attempts row."""
    return Attempt(
        number=row["number"],
        state=AttemptState(row["state"]),
        agent=row["agent_id"],
        argv=tuple(row["argv"]),
        lease_token=row["lease_token"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        exit_code=row["exit_code"],
        signal=row["signal"],
        message=row["message"],
    )


def agent_from_row(row: Mapping[str, Any]) -> Agent:
    """A domain Agent from an agents row with its active run count."""
    return Agent(
        id=row["id"],
        hostname=row["hostname"],
        labels=row["labels"],
        capacity=row["capacity"],
        version=row["version"],
        state=row["state"],
        coordinator=row["coordinator_id"] or "",
        connected_at=row["connected_at"],
        last_seen_at=row["last_seen_at"],
        active_runs=row["active_runs"],
    )
