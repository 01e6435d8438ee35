"""Occurrences that got no run, recorded as ranges; and what the explanation of one
occurrence reads. Every function works in the caller's transaction.

A range is contiguous occurrences of one trigger dropped for one reason: a drop
that starts right after the range the trigger last dropped into, for the same
reason, extends that row, so the rows follow the number of drops, not the
number of occurrences (a per-second cron paused for a month is one row).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from hydra.coordinator.store.records import SkippedRange
from hydra.coordinator.store.transaction import Row, Transaction
from hydra.domain import TaskSpec
from hydra.errors import NotFound
from hydra.occurrences import SkipReason

#: At most this many runs are named as holding a task's slots.
SLOT_HOLDERS_SHOWN = 5


async def record_skipped(tx: Transaction, ranges: Sequence[SkippedRange]) -> list[SkippedRange]:
    """Record occurrences that get no run, in the transaction that drops them.

    Every drop goes through here. Returns the ranges this call recorded: a drop
    another coordinator (or another upstream of an `after` task) recorded already
    is left out, so what reacts to drops does so once.
    """
    recorded = []
    for skipped in ranges:
        if skipped.previous is not None and await _extend(tx, skipped):
            recorded.append(skipped)
            continue
        row = await tx.one(
            "insert_skipped_occurrences",
            task_id=skipped.task_id,
            position=skipped.trigger_position,
            reason=skipped.reason.value,
            first=skipped.first,
            last=skipped.last,
            count=skipped.count,
            detail=skipped.detail,
        )
        if row is not None:
            recorded.append(skipped)
    return recorded


async def _extend(tx: Transaction, skipped: SkippedRange) -> bool:
    row = await tx.one(
        "extend_skipped_occurrences",
        task_id=skipped.task_id,
        position=skipped.trigger_position,
        reason=skipped.reason.value,
        previous=skipped.previous,
        last=skipped.last,
        count=skipped.count,
    )
    return row is not None


async def skipped_covering(
    tx: Transaction, task_id: int, occurrence: datetime
) -> list[SkippedRange]:
    """The recorded ranges of the task's dropped occurrences that hold `occurrence`."""
    rows = await tx.all("skipped_ranges_covering", task_id=task_id, occurrence=occurrence)
    return [
        SkippedRange(
            task_id=task_id,
            trigger_position=row["trigger_position"],
            reason=SkipReason(row["reason"]),
            first=row["first_occurrence"],
            last=row["last_occurrence"],
            count=row["occurrence_count"],
            detail=row["detail"],
        )
        for row in rows
    ]


async def run_id_at(tx: Transaction, task_id: int, occurrence: datetime) -> str | None:
    """The id of the task's run for `occurrence`, if it has one."""
    row = await tx.one("run_id_at", task_id=task_id, occurrence=occurrence)
    return None if row is None else str(row["id"])


async def slot_holders(
    tx: Transaction, task_id: int, run_id: str, occurrence: datetime
) -> list[Row]:
    """The runs that take the task's slots before the queued run `run_id` (a few,
    oldest first; each row's `ahead` says how many there are in all)."""
    return await tx.all(
        "runs_holding_slots",
        task_id=task_id,
        except_id=run_id,
        occurrence=occurrence,
        limit=SLOT_HOLDERS_SHOWN,
    )


async def upstream_runs(tx: Transaction, names: Sequence[str], occurrence: datetime) -> list[Row]:
    """The runs of the named tasks for `occurrence` (name, id, state, reason)."""
    return await tx.all("upstream_runs_at", names=list(names), occurrence=occurrence)


async def trigger_schedules(tx: Transaction, task_id: int) -> list[Row]:
    """The task's triggers: position, kind, next fire, last fired, pause, active."""
    return await tx.all("trigger_schedules_of_task", task_id=task_id)


async def active_at(tx: Transaction, task_id: int, occurrence: datetime, at: datetime) -> list[Row]:
    """The task's runs for earlier occurrences that were queued or active at `at`."""
    return await tx.all(
        "runs_active_at", task_id=task_id, occurrence=occurrence, at=at, limit=SLOT_HOLDERS_SHOWN
    )


async def pinned_spec(tx: Transaction, run_id: str) -> TaskSpec:
    """The spec of the version a run is pinned to."""
    row = await tx.one("run_spec", run_id=run_id)
    if row is None:
        raise NotFound(f"run {run_id!r} not found")
    return tx.spec(row["task_id"], row["task_version"], row["spec"])
