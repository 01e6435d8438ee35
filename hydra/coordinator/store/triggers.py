"""Due time triggers: create their runs and advance them, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from hydra.coordinator.store import occurrences, outbox, runs
from hydra.coordinator.store.records import DueTrigger, FirePlan, NewRun, SkippedRange
from hydra.coordinator.store.transaction import Row, Transaction
from hydra.domain import Cron, TriggerKind


async def fire_due(
    tx: Transaction, now: datetime, limit: int, plan: Callable[[DueTrigger], FirePlan]
) -> int:
    """Lock the triggers due by `now` (SKIP LOCKED), create the runs `plan` chooses
    (ON CONFLICT DO NOTHING on task + occurrence), record the occurrences it drops
    and advance the triggers.

    Returns how many triggers were due (the caller loops while it is `limit`).
    """
    rows = await tx.all("claim_due_triggers", now=now, limit=limit)
    if not rows:
        return 0
    new_runs: list[NewRun] = []
    skipped: list[SkippedRange] = []
    ids, nexts, lasts = [], [], []
    for row in rows:
        due = _due_trigger(tx, row)
        fire = plan(due)
        skipped.extend(fire.skipped)
        if fire.missed_since is not None:
            await outbox.occurrences_missed(tx, due, fire.dropped, fire.missed_since)
        cause = TriggerKind(row["kind"]).cause
        new_runs.extend(
            NewRun(
                task_id=due.task_id,
                task_version=due.task_version,
                spec=due.task_spec,
                occurrence=occurrence,
                cause=cause,
                params=due.task_spec.params,
                timezone=_template_zone(due),
            )
            for occurrence in fire.occurrences
        )
        ids.append(due.trigger_id)
        nexts.append(fire.next_fire_at)
        lasts.append(fire.last_fired_at)
    await tx.execute("advance_triggers", ids=ids, next_fire_ats=nexts, last_fired_ats=lasts)
    await runs.insert_runs(tx, new_runs)
    await occurrences.record_skipped(tx, skipped)
    return len(rows)


async def next_fire(tx: Transaction) -> datetime | None:
    """The earliest next fire time over every active trigger."""
    row = await tx.one("next_trigger_fire")
    return row["next_fire_at"] if row else None


def _due_trigger(tx: Transaction, row: Row) -> DueTrigger:
    return DueTrigger(
        trigger_id=row["id"],
        task_id=row["task_id"],
        task_name=row["name"],
        task_version=row["version"],
        task_spec=tx.spec(row["task_id"], row["version"], row["task_spec"]),
        position=row["position"],
        next_fire_at=row["next_fire_at"],
        last_fired_at=row["last_fired_at"],
        paused_at=row["paused_at"],
        resumed_at=row["resumed_at"],
    )


def _template_zone(due: DueTrigger) -> str:
    """The zone templates show the occurrence in: the cron trigger's own, else the task's."""
    trigger = due.task_spec.triggers[due.position]
    return trigger.timezone or "UTC" if isinstance(trigger, Cron) else due.task_spec.timezone
