"""Creating runs on request: manual triggers and backfills."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from hydra.coordinator import schedule
from hydra.coordinator.lease_store import LeaseStore
from hydra.coordinator.records import NewRun
from hydra.coordinator.trigger_loop import time_trigger
from hydra.domain import After, Run, Task, TaskSpec
from hydra.errors import FailedPrecondition, FieldProblem, InvalidArgument

#: Most occurrences one backfill may cover.
MAX_BACKFILL = 10_000
#: Longest idempotency key accepted.
MAX_KEY = 256


@dataclass(frozen=True, kw_only=True, slots=True)
class BackfillResult:
    """What a backfill found and did."""

    occurrences: list[datetime]
    created: list[Run]
    existing: int


async def trigger(
    store: LeaseStore,
    task_name: str,
    *,
    params: Mapping[str, str],
    idempotency_key: str,
    occurrence: datetime | None,
    now: datetime,
) -> tuple[Run, bool]:
    """A manual run, or the run an earlier call with the same key (or occurrence) made."""
    if len(idempotency_key) > MAX_KEY:
        raise InvalidArgument(f"at most {MAX_KEY} characters", path="idempotency_key")

    def build(task_id: int, task: Task) -> NewRun:
        return NewRun(
            task_id=task_id,
            task_version=task.version,
            spec=task.spec,
            occurrence=occurrence or now,
            cause="manual",
            params=merge_params(task.spec, params),
            idempotency_key=idempotency_key or None,
            timezone=task.spec.timezone,
        )

    return await store.trigger_task(task_name, build)


def merge_params(spec: TaskSpec, overrides: Mapping[str, str]) -> dict[str, str]:
    """Task defaults overridden by a run's params; an undeclared name is refused."""
    unknown = sorted(set(overrides) - set(spec.params))
    if unknown:
        declared = ", ".join(sorted(spec.params)) or "none"
        raise InvalidArgument(
            [
                FieldProblem(
                    path=f"params.{name}",
                    message=f"task {spec.name} declares no such parameter (declared: {declared})",
                )
                for name in unknown
            ]
        )
    return {**spec.params, **overrides}


async def backfill(
    store: LeaseStore, task_name: str, *, start: datetime, end: datetime, dry_run: bool
) -> BackfillResult:
    """Runs for every occurrence of the task's time triggers in [start, end];
    occurrences that already have a run are left alone."""
    if end < start:
        raise InvalidArgument("must not be before from", path="to")
    task_id, task = await store.task_ref(task_name)
    found = backfill_occurrences(task.spec, start, end)
    if dry_run:
        return BackfillResult(occurrences=found, created=[], existing=0)
    created_ids = await store.create_runs(
        [
            NewRun(
                task_id=task_id,
                task_version=task.version,
                spec=task.spec,
                occurrence=o,
                cause="backfill",
                params=task.spec.params,
                timezone=task.spec.timezone,
            )
            for o in found
        ]
    )
    created = await store.get_runs(created_ids)
    return BackfillResult(occurrences=found, created=created, existing=len(found) - len(created))


def backfill_occurrences(spec: TaskSpec, start: datetime, end: datetime) -> list[datetime]:
    """Every occurrence of the spec's time triggers in [start, end], merged and sorted."""
    positions = [i for i, t in enumerate(spec.triggers) if not isinstance(t, After)]
    if not positions:
        raise FailedPrecondition(f"task {spec.name} has no time triggers to backfill")
    found: set[datetime] = set()
    for position in positions:
        trigger = time_trigger(spec, position, anchor=start)
        found.update(itertools.islice(schedule.occurrences(trigger, start, end), MAX_BACKFILL + 1))
    if len(found) > MAX_BACKFILL:
        raise InvalidArgument(f"covers more than {MAX_BACKFILL} occurrences; split it", path="to")
    return sorted(found)
