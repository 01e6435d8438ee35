"""Changing tasks. Applying a spec: validation that needs the coordinator's
libraries (croniter, Jinja2), initial fire times, then one store transaction;
resuming a task, which applies its catch-up policy to the paused stretch;
pausing and deleting one.

Each change takes the audit entry of the call that asks for it (None: not
recorded, e.g. a dry run) and records it in the change's own transaction."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from hydra.coordinator import dropped, schedule
from hydra.coordinator.store import Database, Row, Transaction, audit, occurrences, tasks
from hydra.coordinator.store.records import Applied, SkippedRange, TriggerRow
from hydra.coordinator.template_checks import check_templates
from hydra.coordinator.webhooks import check_spec_bodies
from hydra.domain import After, AuditEntry, Catchup, Task, TaskSpec, TriggerKind
from hydra.errors import FieldProblem, InvalidArgument
from hydra.spec import task_to_dict


def check_spec(spec: TaskSpec) -> None:
    """Checks beyond hydra.spec.validate_task: cron syntax, templates, webhook bodies."""
    problems: list[FieldProblem] = []
    for position, trigger in enumerate(spec.triggers):
        if isinstance(trigger, After):
            continue
        try:
            schedule.validate_trigger(trigger, f"spec.triggers[{position}]")
        except InvalidArgument as error:
            problems.extend(error.problems)
    try:
        check_templates(spec)
    except InvalidArgument as error:
        problems.extend(
            FieldProblem(path=f"spec.{p.path}" if p.path else "spec", message=p.message)
            for p in error.problems
        )
    problems.extend(
        FieldProblem(path=f"spec.{p.path}", message=p.message) for p in check_spec_bodies(spec)
    )
    if problems:
        raise InvalidArgument(problems)


def trigger_rows(spec: TaskSpec, now: datetime) -> list[TriggerRow]:
    """The stored form of each trigger, with its first fire time."""
    dicts = task_to_dict(spec)["triggers"]
    return [
        TriggerRow(
            position=position,
            kind=TriggerKind.of(trigger),
            spec=dicts[position],
            next_fire_at=None if isinstance(trigger, After) else schedule.first_fire(trigger, now),
        )
        for position, trigger in enumerate(spec.triggers)
    ]


async def apply_spec(
    database: Database,
    spec: TaskSpec,
    *,
    dry_run: bool,
    now: datetime,
    audit_entry: AuditEntry | None = None,
) -> Applied:
    """Validate and store a spec; an identical spec changes nothing. A dry run
    stores nothing and records no audit entry."""
    check_spec(spec)
    rows = trigger_rows(spec, now)
    async with database.transaction() as tx:
        applied = await tasks.apply_task(tx, spec, rows, dry_run=dry_run, now=now)
        if not dry_run:
            await occurrences.record_skipped(tx, _replaced_drops(applied, now))
            await _audit(tx, audit_entry, task=spec.name, detail=_applied_detail(applied))
        return applied


def _replaced_drops(applied: Applied, now: datetime) -> list[SkippedRange]:
    """The pending occurrences of the time triggers a new version replaced."""
    drops = (dropped.replaced_drops(r, applied.task.version, now) for r in applied.replaced)
    return [drop for drop in drops if drop is not None]


def _applied_detail(applied: Applied) -> str:
    version = f"version {applied.task.version}"
    if not applied.changed:
        return f"{version} (unchanged)"
    return f"{version} (created)" if applied.previous_version == 0 else version


async def pause(database: Database, name: str, *, audit_entry: AuditEntry | None = None) -> Task:
    """Pause a task's triggers (its runs go on)."""
    async with database.transaction() as tx:
        task = await tasks.set_paused(tx, name, True)
        await _audit(tx, audit_entry, task=name, detail=f"version {task.version}")
        return task


async def delete(
    database: Database, name: str, *, force: bool, audit_entry: AuditEntry | None = None
) -> int:
    """Delete a task, cancelling its queued runs; returns how many were cancelled."""
    async with database.transaction() as tx:
        cancelled = await tasks.delete_task(tx, name, force=force)
        await _audit(tx, audit_entry, task=name, detail=f"{cancelled} queued runs cancelled")
        return cancelled


async def resume(
    database: Database, name: str, now: datetime, *, audit_entry: AuditEntry | None = None
) -> Task:
    """Resume a task (see `_resume_in`)."""
    async with database.transaction() as tx:
        task = await _resume_in(tx, name, now)
        await _audit(tx, audit_entry, task=name, detail=f"version {task.version}")
        return task


async def _audit(tx: Transaction, entry: AuditEntry | None, *, task: str, detail: str) -> None:
    if entry is not None:
        await audit.record(tx, replace(entry, task=task, detail=detail))


async def _resume_in(tx: Transaction, name: str, now: datetime) -> Task:
    """Resume a task in `tx`. With catchup none, the paused stretch is skipped: each
    time trigger moves to its first occurrence after now, and the occurrences it
    skips are recorded as paused; otherwise the trigger loop finds the missed
    occurrences and applies the catch-up policy (and records what it drops)."""
    _, task = await tasks.task_ref(tx, name)
    if task.spec.catchup is not Catchup.NONE or not task.paused:
        return await tasks.set_paused(tx, name, False)
    skipped: list[SkippedRange] = []

    def skip_paused_stretch(row: Row) -> datetime | None:
        next_fire_at: datetime | None = row["next_fire_at"]
        trigger = schedule.time_trigger(task.spec, row["position"], anchor=next_fire_at or now)
        if next_fire_at is None or next_fire_at > now:
            return next_fire_at
        drop = dropped.resume_drops(
            task_id=row["task_id"],
            position=row["position"],
            trigger=trigger,
            next_fire_at=next_fire_at,
            paused_at=row["paused_at"],
            now=now,
        )
        skipped.extend([drop] if drop else [])
        return schedule.next_fire(trigger, now)

    resumed = await tasks.set_paused(tx, name, False, reschedule=skip_paused_stretch)
    await occurrences.record_skipped(tx, skipped)
    return resumed
