"""What a fire or a resume drops, as ranges: one per reason, cheap however long
the stretch (coordinator/dropped.py, through the trigger loop's plan_fire)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from hydra.coordinator import dropped
from hydra.coordinator.loops.triggers import plan_fire
from hydra.coordinator.store.records import DueTrigger
from hydra.domain import Catchup, Cron, Interval, TaskSpec
from hydra.occurrences import SkipReason

EVERY_SECOND = Cron(expression="* * * * * *")
MONTH = timedelta(days=30)


def _due(spec: TaskSpec, next_fire_at: datetime, **pause: datetime) -> DueTrigger:
    return DueTrigger(
        trigger_id=1,
        task_id=7,
        task_name=spec.name,
        task_version=1,
        task_spec=spec,
        position=0,
        next_fire_at=next_fire_at,
        last_fired_at=next_fire_at - timedelta(seconds=1),
        **pause,
    )


def _spec(**fields: object) -> TaskSpec:
    return TaskSpec(name="tick", command=("true",), triggers=(EVERY_SECOND,), **fields)  # type: ignore[arg-type]


def _second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def test_a_month_of_a_per_second_cron_missed_with_catchup_latest_is_one_range_found_fast() -> None:
    start = _second(datetime.now(UTC) - MONTH)
    began = time.perf_counter()
    plan = plan_fire(_due(_spec(catchup=Catchup.LATEST), start))
    assert time.perf_counter() - began < 2.0
    (skipped,) = plan.skipped
    assert skipped.reason is SkipReason.CATCHUP_LATEST
    assert skipped.first == start
    assert skipped.count is None  # 2.6 million: too many to count one by one
    newest = plan.occurrences[0]
    assert skipped.last == newest - timedelta(seconds=1)
    assert skipped.previous == start - timedelta(seconds=1)  # may extend the last range


def test_catchup_all_drops_beyond_max_catchup_and_counts_them() -> None:
    start = _second(datetime.now(UTC) - timedelta(seconds=30))
    plan = plan_fire(_due(_spec(catchup=Catchup.ALL, max_catchup=10), start))
    (skipped,) = plan.skipped
    assert skipped.reason is SkipReason.MAX_CATCHUP
    assert skipped.first == start
    assert skipped.count is not None and 18 <= skipped.count <= 21
    assert skipped.last < plan.occurrences[0]
    assert "max_catchup (10)" in skipped.detail


def test_a_starting_deadline_drops_the_oldest_of_the_kept_window() -> None:
    start = _second(datetime.now(UTC) - timedelta(seconds=20))
    spec = _spec(catchup=Catchup.ALL, max_catchup=100, starting_deadline=timedelta(seconds=5))
    plan = plan_fire(_due(spec, start))
    (skipped,) = plan.skipped
    assert skipped.reason is SkipReason.STARTING_DEADLINE
    assert skipped.first == start
    assert skipped.count == (skipped.last - skipped.first).seconds + 1
    assert plan.occurrences[0] == skipped.last + timedelta(seconds=1)


def test_catchup_none_drops_every_missed_occurrence() -> None:
    start = _second(datetime.now(UTC) - timedelta(minutes=10))
    plan = plan_fire(_due(_spec(catchup=Catchup.NONE), start))
    (skipped,) = plan.skipped
    assert skipped.reason is SkipReason.CATCHUP_NONE
    assert skipped.count == (skipped.last - skipped.first).seconds + 1
    assert all(o > skipped.last for o in plan.occurrences)


def test_drops_within_the_last_pause_are_recorded_as_paused_with_the_policy() -> None:
    now = datetime.now(UTC)
    start = _second(now - timedelta(minutes=5))
    due = _due(_spec(catchup=Catchup.LATEST), start, paused_at=start, resumed_at=now)
    (skipped,) = plan_fire(due).skipped
    assert skipped.reason is SkipReason.PAUSED
    assert "catchup latest" in skipped.detail


def test_an_on_time_fire_drops_nothing() -> None:
    start = datetime.now(UTC) + timedelta(milliseconds=20)
    assert plan_fire(_due(_spec(catchup=Catchup.NONE), _second(start))).skipped == ()


def test_a_resume_drops_the_paused_stretch_as_one_range_with_an_exact_interval_count() -> None:
    anchor = datetime(2026, 1, 1, tzinfo=UTC)
    every = Interval(every=timedelta(minutes=5), anchor=anchor)
    now = anchor + MONTH + timedelta(seconds=7)
    skipped = dropped.resume_drops(
        task_id=7, position=0, trigger=every, next_fire_at=anchor, paused_at=anchor, now=now
    )
    assert skipped is not None
    assert (skipped.reason, skipped.first, skipped.last) == (
        SkipReason.PAUSED,
        anchor,
        anchor + MONTH,
    )
    assert skipped.count == 30 * 24 * 12 + 1
