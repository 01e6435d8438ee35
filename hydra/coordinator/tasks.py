"""Applying task specs: validation that needs the coordinator's libraries
(croniter, Jinja2), initial fire times, then one store transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hydra.coordinator import schedule
from hydra.coordinator.lease_store import LeaseStore
from hydra.coordinator.records import TriggerRow
from hydra.coordinator.templates import check_templates
from hydra.coordinator.trigger_loop import first_fire, time_trigger
from hydra.domain import After, Catchup, Task, TaskSpec
from hydra.errors import FieldProblem, InvalidArgument
from hydra.spec import task_to_dict


@dataclass(frozen=True, kw_only=True, slots=True)
class Applied:
    """The result of applying one spec."""

    task: Task
    changed: bool
    previous_version: int


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
            kind=next(iter(_kind(trigger))),
            spec=dicts[position],
            next_fire_at=None if isinstance(trigger, After) else first_fire(trigger, now),
        )
        for position, trigger in enumerate(spec.triggers)
    ]


def _kind(trigger: object) -> tuple[str]:
    return (type(trigger).__name__.lower(),)


async def apply_spec(store: LeaseStore, spec: TaskSpec, *, dry_run: bool, now: datetime) -> Applied:
    """Validate and store a spec; an identical spec changes nothing."""
    check_spec(spec)
    outcome = await store.apply_task(spec, trigger_rows(spec, now), dry_run=dry_run)
    if dry_run:
        task = Task(
            name=spec.name,
            version=outcome.version,
            paused=False,
            spec=spec,
            created_at=now,
            updated_at=now,
        )
    else:
        task = await store.get_task(spec.name)
    return Applied(task=task, changed=outcome.changed, previous_version=outcome.previous_version)


async def resume(store: LeaseStore, name: str, now: datetime) -> Task:
    """Resume a task. With catchup none, the paused stretch is skipped: each time
    trigger moves to its first occurrence after now; otherwise the trigger loop
    finds the missed occurrences and applies the catch-up policy."""
    _, task = await store.task_ref(name)
    if task.spec.catchup is not Catchup.NONE:
        return await store.set_paused(name, False)

    def skip_paused_stretch(position: int, next_fire_at: datetime | None) -> datetime | None:
        trigger = time_trigger(task.spec, position, anchor=next_fire_at or now)
        if next_fire_at is None or next_fire_at > now:
            return next_fire_at
        return schedule.next_fire(trigger, now)

    return await store.set_paused(name, False, reschedule=skip_paused_stretch)
