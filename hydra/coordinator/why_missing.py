"""Why an occurrence has no run: its drop record, or what the task's triggers say
about it (see `why`)."""

from __future__ import annotations

from datetime import datetime, timedelta

from hydra.coordinator import schedule
from hydra.coordinator.store import Row, Transaction, occurrences
from hydra.coordinator.store.records import SkippedRange
from hydra.domain import After, Task, Trigger
from hydra.occurrences import Fact, FactKind, SkipReason, describe_trigger

_MICROSECOND = timedelta(microseconds=1)
_REASONS = {
    SkipReason.CATCHUP_NONE: "it was missed, and dropped by the catch-up policy",
    SkipReason.CATCHUP_LATEST: "it was missed, and dropped by the catch-up policy",
    SkipReason.MAX_CATCHUP: "it was missed, and dropped by the catch-up policy",
    SkipReason.STARTING_DEADLINE: "it was missed past its starting deadline",
    SkipReason.PAUSED: "it fell while the task was paused",
    SkipReason.TRIGGER_CHANGED: "it was pending when a new version changed its trigger",
}


async def facts(
    tx: Transaction, task_id: int, task: Task, occurrence: datetime, now: datetime
) -> list[Fact]:
    """Facts about an occurrence of `task` that has no run."""
    dropped = await occurrences.skipped_covering(tx, task_id, occurrence)
    if dropped:
        return [_dropped_fact(task, skipped) for skipped in dropped]
    if occurrence < task.created_at:
        when = task.created_at.isoformat()
        return [
            Fact(kind=FactKind.BEFORE_TASK, message=f"no run: before the task existed ({when})")
        ]
    schedules = {row["position"]: row for row in await occurrences.trigger_schedules(tx, task_id)}
    found: list[Fact] = []
    for position, trigger in enumerate(task.spec.triggers):
        found += await _trigger_facts(
            tx, task, position, trigger, schedules.get(position), occurrence, now
        )
    return found or [_not_an_occurrence(task, schedules)]


def _dropped_fact(task: Task, skipped: SkippedRange) -> Fact:
    span = f"from {skipped.first.isoformat()} to {skipped.last.isoformat()}"
    count = "many" if skipped.count is None else str(skipped.count)
    trigger = _describe(task, skipped.trigger_position)
    if skipped.reason is SkipReason.TRIGGER_CHANGED:
        trigger = f"trigger {skipped.trigger_position} as it was then"
    message = (
        f"no run: {_REASONS[skipped.reason]} ({skipped.detail}); it is one of {count} "
        f"occurrence(s) of {trigger} dropped {span}"
    )
    return Fact(
        kind=FactKind.DROPPED,
        message=message,
        ids={"reason": skipped.reason.value, "trigger": str(skipped.trigger_position)},
    )


async def _trigger_facts(
    tx: Transaction,
    task: Task,
    position: int,
    trigger: Trigger,
    stored: Row | None,
    occurrence: datetime,
    now: datetime,
) -> list[Fact]:
    if isinstance(trigger, After):
        upstream = await upstream_facts(tx, task, occurrence)
        return [] if all("upstream_run_id" not in f.ids for f in upstream) else upstream
    if stored is None or not _fires_at(task, position, stored, occurrence):
        return []
    return [_time_trigger_fact(task, position, stored, occurrence, now)]


def _fires_at(task: Task, position: int, stored: Row, occurrence: datetime) -> bool:
    anchor = stored["next_fire_at"] or stored["last_fired_at"] or occurrence
    trigger = schedule.time_trigger(task.spec, position, anchor=anchor)
    return schedule.next_fire(trigger, occurrence - _MICROSECOND) == occurrence


def _time_trigger_fact(
    task: Task, position: int, stored: Row, occurrence: datetime, now: datetime
) -> Fact:
    described = _describe(task, position)
    next_fire: datetime | None = stored["next_fire_at"]
    if next_fire is not None and occurrence >= next_fire:
        if task.paused:
            since = stored["paused_at"].isoformat() if stored["paused_at"] else "?"
            message = (
                f"no run yet: the task is paused (since {since}); {described} has not fired "
                f"this occurrence; on resume, catchup {task.spec.catchup.value} decides"
            )
            return Fact(kind=FactKind.PAUSED, message=message)
        timing = f"fires next at {next_fire.isoformat()}"
        if next_fire <= now:
            timing = f"was due at {next_fire.isoformat()} and fires in a moment"
        return Fact(kind=FactKind.NOT_DUE, message=f"not due yet: {described} {timing}")
    if next_fire is None and stored["last_fired_at"] is None:
        message = f"no run: {described} never fired (its time had passed when it was applied)"
        return Fact(kind=FactKind.NOT_AN_OCCURRENCE, message=message)
    message = (
        f"no run and no record: {described} passed this occurrence without creating a run "
        "(before drops were recorded, or its record was pruned)"
    )
    return Fact(kind=FactKind.UNKNOWN, message=message)


def _not_an_occurrence(task: Task, schedules: dict[int, Row]) -> Fact:
    described = "; ".join(_describe(task, p) for p in range(len(task.spec.triggers))) or "none"
    nexts = [r["next_fire_at"] for r in schedules.values() if r["next_fire_at"] and r["active"]]
    upcoming = f"; next fire at {min(nexts).isoformat()}" if nexts else ""
    message = (
        f"no run: not an occurrence of any trigger of the task (triggers: {described}){upcoming}"
    )
    return Fact(kind=FactKind.NOT_AN_OCCURRENCE, message=message)


def _describe(task: Task, position: int) -> str:
    """A trigger as people write it, e.g. "trigger 0 (cron '0 2 * * *' UTC)"."""
    if position >= len(task.spec.triggers):
        return f"trigger {position} (no longer in the spec)"
    return f"trigger {position} ({describe_trigger(task.spec.triggers[position])})"


async def upstream_facts(tx: Transaction, task: Task, occurrence: datetime) -> list[Fact]:
    """The runs of the task's `after` upstreams for `occurrence`, one fact each."""
    names = [name for t in task.spec.triggers if isinstance(t, After) for name in t.tasks]
    found = {r["name"]: r for r in await occurrences.upstream_runs(tx, names, occurrence)}
    return [_upstream_fact(name, found.get(name)) for name in dict.fromkeys(names)]


def _upstream_fact(name: str, row: Row | None) -> Fact:
    if row is None:
        return Fact(
            kind=FactKind.UPSTREAM, message=f"upstream {name} has no run for this occurrence"
        )
    state = str(row["state"])
    reason = f" ({row['reason']})" if row["reason"] else ""
    return Fact(
        kind=FactKind.UPSTREAM,
        message=f"upstream {name} run {row['id']} is {state}{reason}",
        ids={"upstream_run_id": str(row["id"]), "upstream_task": name},
    )
