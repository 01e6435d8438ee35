"""The trigger loop: turns due time triggers into runs.

It sleeps until the earliest `next_fire_at` (or a `hydra_triggers`
notification), then locks the due triggers with `SKIP LOCKED`, creates their
runs (`ON CONFLICT DO NOTHING` on task + occurrence, so any number of
coordinators firing at once make one run) and advances them, in one
transaction, in which the dispatcher leases them to this coordinator's agents
(the runs are due within 50 ms, LEASE_AHEAD). Which missed occurrences get runs
follows the task's catch-up policy; see :func:`plan_fire`. The occurrences it
drops are recorded, with why, in the same transaction (`coordinator/dropped.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import datetime, timedelta

from hydra.coordinator import dropped, schedule
from hydra.coordinator.loops.dispatcher import Dispatcher
from hydra.coordinator.loops.timing import seconds_until, utcnow, wait_event
from hydra.coordinator.store import Database, triggers
from hydra.coordinator.store.records import LEASE_AHEAD, DueTrigger, FirePlan
from hydra.domain import Catchup, TaskSpec, TimeTrigger
from hydra.occurrences import SkipReason

log = logging.getLogger("hydra.coordinator.triggers")

#: How late an occurrence may be found and still count as on time, not missed
#: (for catchup none): loop latency is milliseconds; an outage is longer.
MISFIRE_GRACE = timedelta(seconds=5)
#: Triggers handled per transaction.
BATCH = 500
#: Upper bound of the loop's sleep when nothing wakes it.
FALLBACK_POLL_SECONDS = 5.0


class TriggerLoop:
    """Creates runs for due triggers."""

    def __init__(self, database: Database, dispatcher: Dispatcher) -> None:
        self._db = database
        self._dispatcher = dispatcher
        self.wake = asyncio.Event()

    async def step(self) -> None:
        """Fire everything due within LEASE_AHEAD, then sleep until the next fire time
        comes that close: the runs are leased ahead, and their processes start on time."""
        while await self.tick() == BATCH:
            pass
        next_fire = await self._db.run(triggers.next_fire)
        wake_at = None if next_fire is None else next_fire - LEASE_AHEAD
        await wait_event(self.wake, seconds_until(wake_at, cap=FALLBACK_POLL_SECONDS))

    async def tick(self) -> int:
        """One transaction: create the runs of up to BATCH due triggers, advance them,
        and lease the new runs to this coordinator's agents. Returns how many were due."""
        async with self._db.transaction() as tx:
            due = await triggers.fire_due(tx, utcnow() + LEASE_AHEAD, BATCH, plan_fire)
            await self._dispatcher.lease_available(tx)
        return due


def plan_fire(due: DueTrigger) -> FirePlan:
    """Which occurrences of a due trigger get runs now, and its next fire time.

    Occurrences up to LEASE_AHEAD from now are on time and always get runs
    (which start at their time); the catch-up policy picks among the past ones.
    """
    now = utcnow()
    trigger = schedule.time_trigger(due.task_spec, due.position, due.next_fire_at)
    past = _due_occurrences(trigger, due.next_fire_at, now, _keep(due.task_spec))
    chosen = _apply_policies(due, past, now)
    soon = max(due.next_fire_at, now + timedelta(microseconds=1))
    upcoming = list(schedule.occurrences(trigger, soon, now + LEASE_AHEAD))
    last = (upcoming or past or [due.next_fire_at])[-1]
    missed = tuple(o for o in past if o not in chosen)
    skipped = dropped.fire_drops(due, trigger, past, len(chosen), now)
    # Occurrences that fell in a pause were not missed: the task was paused on purpose.
    paused_only = bool(skipped) and all(r.reason is SkipReason.PAUSED for r in skipped)
    return FirePlan(
        occurrences=(*chosen, *upcoming),
        next_fire_at=schedule.next_fire(trigger, max(now + LEASE_AHEAD, last)),
        last_fired_at=last,
        skipped=skipped,
        missed_since=None if paused_only else _missed_since(due, past, missed),
        dropped=() if paused_only else missed,
    )


def _missed_since(
    due: DueTrigger, past: list[datetime], dropped: tuple[datetime, ...]
) -> datetime | None:
    """The first occurrence the policies dropped, or None: older than the ones
    found when the trigger was behind by more than the policy keeps."""
    if past and due.next_fire_at < past[0]:
        return due.next_fire_at
    return min(dropped) if dropped else None


def _keep(spec: TaskSpec) -> int:
    return spec.max_catchup if spec.catchup is Catchup.ALL else 1


def _due_occurrences(
    trigger: TimeTrigger, first: datetime, now: datetime, keep: int
) -> list[datetime]:
    """The newest `keep` occurrences in [first, now]; the scan widens from `now`
    backwards so a long pause of a per-second task stays cheap."""
    lookback = timedelta(minutes=1)
    while True:
        start = max(first, now - lookback)
        window: deque[datetime] = deque(schedule.occurrences(trigger, start, now), maxlen=keep)
        if len(window) >= keep or start == first:
            return list(window)
        lookback *= 60


def _apply_policies(due: DueTrigger, occurrences: list[datetime], now: datetime) -> list[datetime]:
    spec = due.task_spec
    kept = occurrences
    if spec.starting_deadline is not None:
        kept = [o for o in kept if now - o <= spec.starting_deadline]
    if spec.catchup is Catchup.NONE:
        kept = [o for o in kept if now - o <= MISFIRE_GRACE]
    dropped = len(occurrences) - len(kept)
    missed_before = due.next_fire_at < (occurrences[0] if occurrences else due.next_fire_at)
    if dropped or missed_before:
        log.warning(
            "task %s: occurrences since %s were missed; catchup=%s created %d run(s)",
            due.task_name,
            due.next_fire_at.isoformat(),
            spec.catchup.value,
            len(kept),
        )
    return kept
