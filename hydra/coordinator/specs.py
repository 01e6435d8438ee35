"""Applying task specs: validation that needs the coordinator's libraries
(croniter, Jinja2), initial fire times, then one store transaction; and
resuming a task, which applies its catch-up policy to the paused stretch."""

from __future__ import annotations

from datetime import datetime

from hydra.coordinator import schedule
from hydra.coordinator.store import Database, tasks
from hydra.coordinator.store.records import Applied, TriggerRow
from hydra.coordinator.template_checks import check_templates
from hydra.domain import After, Catchup, Task, TaskSpec, TriggerKind
from hydra.errors import FieldProblem, InvalidArgument
from hydra.spec import task_to_dict


def check_spec(spec: TaskSpec) -> None:
    """Checks beyond hydra.spec.validate_task: cron syntax and templates."""
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
    database: Database, spec: TaskSpec, *, dry_run: bool, now: datetime
) -> Applied:
    """Validate and store a spec; an identical spec changes nothing."""
    check_spec(spec)
    rows = trigger_rows(spec, now)
    return await database.run(tasks.apply_task, spec, rows, dry_run=dry_run, now=now)


async def resume(database: Database, name: str, now: datetime) -> Task:
    """Resume a task. With catchup none, the paused stretch is skipped: each time
    trigger moves to its first occurrence after now; otherwise the trigger loop
    finds the missed occurrences and applies the catch-up policy."""
    async with database.transaction() as tx:
        _, task = await tasks.task_ref(tx, name)
        if task.spec.catchup is not Catchup.NONE:
            return await tasks.set_paused(tx, name, False)

        def skip_paused_stretch(position: int, next_fire_at: datetime | None) -> datetime | None:
            trigger = schedule.time_trigger(task.spec, position, anchor=next_fire_at or now)
            if next_fire_at is None or next_fire_at > now:
                return next_fire_at
            return schedule.next_fire(trigger, now)

        return await tasks.set_paused(tx, name, False, reschedule=skip_paused_stretch)
