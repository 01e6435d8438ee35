"""Tasks and their versions. Every function works in the caller's transaction."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from hydra.coordinator.store import runs
from hydra.coordinator.store.records import Applied, ReplacedTrigger, TriggerRow
from hydra.coordinator.store.rows import task_from_row
from hydra.coordinator.store.transaction import Row, Transaction
from hydra.domain import Task, TaskSpec, TaskVersion, TriggerKind
from hydra.errors import FailedPrecondition, NotFound
from hydra.spec import task_from_dict, task_to_dict


async def apply_task(
    tx: Transaction, spec: TaskSpec, triggers: Sequence[TriggerRow], *, dry_run: bool, now: datetime
) -> Applied:
    """Create the task or a new version; an identical spec changes nothing."""
    spec_json = task_to_dict(spec)
    if any(trigger.kind is TriggerKind.AFTER for trigger in triggers):
        await runs.check_no_cycle(tx, spec)
    row = await _lock_or_create(tx, spec.name, dry_run=dry_run)
    previous = row["version"] if row is not None else 0
    if row is not None and _stored_form(tx, row) == spec_json:
        return Applied(task=await get_task(tx, spec.name), changed=False, previous_version=previous)
    if dry_run:
        task = Task(
            name=spec.name,
            version=previous + 1,
            paused=False,
            spec=spec,
            created_at=now,
            updated_at=now,
        )
        return Applied(task=task, changed=True, previous_version=previous)
    assert row is not None
    replaced = await _replaced_behind(tx, row, triggers, now)
    await _store_version(tx, row, previous + 1, spec_json, triggers)
    task = await get_task(tx, spec.name)
    return Applied(task=task, changed=True, previous_version=previous, replaced=replaced)


async def _replaced_behind(
    tx: Transaction, row: Row, triggers: Sequence[TriggerRow], now: datetime
) -> tuple[ReplacedTrigger, ...]:
    """The previous version's time triggers that are behind and that this version
    changes or removes (an unchanged trigger keeps its schedule)."""
    if row.get("new"):
        return ()
    old_spec = tx.spec(row["id"], row["version"], row["spec"])
    replaced = []
    for old in await tx.all("time_triggers_behind", task_id=row["id"], now=now):
        position = old["position"]
        new = triggers[position] if position < len(triggers) else None
        if new is None or (new.kind.value, _as_json(new.spec)) != (old["kind"], old["spec"]):
            replaced.append(
                ReplacedTrigger(
                    task_id=row["id"],
                    position=position,
                    spec=old_spec,
                    next_fire_at=old["next_fire_at"],
                )
            )
    return tuple(replaced)


def _stored_form(tx: Transaction, row: Row) -> Row | None:
    """The canonical form of the stored current version, as this Hydra writes it (a
    version stored before a field existed gets it, so re-applying it changes nothing)."""
    if row["spec"] is None:
        return None
    return task_to_dict(tx.spec(row["id"], row["version"], row["spec"]))


async def _lock_or_create(tx: Transaction, name: str, *, dry_run: bool) -> Row | None:
    row = await tx.one("lock_task_by_name", name=name)
    if row is not None or dry_run:
        return row
    created = await tx.one("insert_task", name=name)
    if created is None:  # applied concurrently: take the winner's row
        return await tx.one("lock_task_by_name", name=name)
    return {"id": created["id"], "version": 0, "paused": False, "spec": None, "new": True}


async def _store_version(
    tx: Transaction, row: Row, version: int, spec_json: Row, triggers: Sequence[TriggerRow]
) -> None:
    task_id = row["id"]
    await tx.execute("insert_task_version", task_id=task_id, version=version, spec=Jsonb(spec_json))
    await tx.execute("set_task_version", task_id=task_id, version=version)
    for trigger in triggers:
        await tx.execute(
            "upsert_trigger",
            task_id=task_id,
            position=trigger.position,
            kind=trigger.kind.value,
            spec=Jsonb(dict(trigger.spec)),
            next_fire_at=trigger.next_fire_at,
            paused=row["paused"],
        )
    await tx.execute("delete_triggers_from", task_id=task_id, count=len(triggers))
    await tx.execute("notify_triggers")


async def get_task(tx: Transaction, name: str) -> Task:
    """The live task with this name."""
    _, task = await task_ref(tx, name)
    return task


async def task_ref(tx: Transaction, name: str) -> tuple[int, Task]:
    """The id and current state of the live task with this name."""
    row = await tx.one("get_task", name=name)
    if row is None:
        raise NotFound(f"task {name!r} not found")
    return int(row["id"]), task_from_row(row, tx.spec(row["id"], row["version"], row["spec"]))


async def get_task_versions(tx: Transaction, name: str) -> tuple[Task, list[TaskVersion]]:
    """The task and every version of its spec, newest first."""
    task_id, task = await task_ref(tx, name)
    versions = await tx.all("list_task_versions", task_id=task_id)
    return task, [
        TaskVersion(
            version=v["version"], spec=task_from_dict(v["spec"]), created_at=v["created_at"]
        )
        for v in versions
    ]


async def list_tasks(tx: Transaction, *, after: str, prefix: str, limit: int) -> list[Task]:
    """A page of live tasks ordered by name."""
    like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = await tx.all("list_tasks", after=after, prefix=like, limit=limit)
    return [task_from_row(row, tx.spec(row["id"], row["version"], row["spec"])) for row in rows]


async def set_paused(
    tx: Transaction,
    name: str,
    paused: bool,
    *,
    reschedule: Callable[[Row], datetime | None] | None = None,
) -> Task:
    """Pause or resume a task's triggers; `reschedule(trigger)` may move each time
    trigger's next occurrence in the same transaction (it gets the trigger's
    `task_id`, `position`, `next_fire_at` and `paused_at`)."""
    if reschedule is not None:  # read before the pause ends: `paused_at` is kept
        triggers = await tx.all("time_triggers_of_task", name=name)
    if await tx.one("set_task_paused", name=name, paused=paused) is None:
        raise NotFound(f"task {name!r} not found")
    if reschedule is not None:
        for row in triggers:
            await tx.execute("set_trigger_next_fire", id=row["id"], next_fire_at=reschedule(row))
    await tx.execute("notify_triggers")
    return await get_task(tx, name)


async def delete_task(tx: Transaction, name: str, *, force: bool) -> int:
    """Delete a task, cancelling its queued runs; refused if others depend on it.
    Returns how many runs were cancelled."""
    row = await tx.one("lock_task_by_name", name=name)
    if row is None:
        raise NotFound(f"task {name!r} not found")
    dependents = [r["name"] for r in await tx.all("dependents_of", name=name) if r["name"] != name]
    if dependents and not force:
        raise FailedPrecondition(
            f"task {name!r} is a dependency of {', '.join(dependents)}; delete those first or force"
        )
    cancelled = await tx.all("cancel_queued_runs_of_task", task_id=row["id"], reason="task deleted")
    for _ in cancelled:
        tx.metrics.run_finished(name, "CANCELLED")
    await tx.execute("delete_task", task_id=row["id"])
    return len(cancelled)


def _as_json(value: Mapping[str, Any]) -> Any:
    """`value` as it reads back from a jsonb column (what upsert_trigger compares)."""
    return json.loads(json.dumps(dict(value)))
