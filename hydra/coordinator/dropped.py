"""The occurrences a fire of a time trigger, or a resume, drops: as ranges of one
reason each (first, last, count), computed without walking the whole stretch,
so a per-second cron paused for a month costs what a minute of it does.

The trigger loop keeps the newest missed occurrences its catch-up policy allows
(`plan_fire`), so what it drops is always a prefix of the due ones: the
occurrences older than the kept window, then those the starting deadline or
``catchup: none`` filter out of it.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from hydra.coordinator import schedule
from hydra.coordinator.store.records import DueTrigger, ReplacedTrigger, SkippedRange
from hydra.domain import Catchup, Interval, TaskSpec, TimeTrigger
from hydra.occurrences import SkipReason, describe_trigger

#: Occurrences counted one by one at most; a longer range of a calendar trigger is
#: recorded with no count (an interval's is computed, whatever its length).
COUNT_LIMIT = 1000
_MICROSECOND = timedelta(microseconds=1)
#: An occurrence this close before a pause may still have been unfired when the
#: pause began (the loop lagging): it counts as fallen in the pause.
PAUSE_SLACK = timedelta(seconds=5)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Segment:
    first: datetime
    last: datetime
    count: int | None
    reason: SkipReason


def fire_drops(
    due: DueTrigger, trigger: TimeTrigger, past: Sequence[datetime], kept: int, now: datetime
) -> tuple[SkippedRange, ...]:
    """What a fire drops: the due occurrences before the newest `kept` of `past`
    (the newest missed ones the policy looked at), as ranges."""
    segments = _older_segment(due, trigger, past)
    for occurrence in past[: len(past) - kept]:
        segments = _append(segments, occurrence, _filter_reason(due.task_spec, occurrence, now))
    return tuple(_ranges(due, segments))


def resume_drops(
    *,
    task_id: int,
    position: int,
    trigger: TimeTrigger,
    next_fire_at: datetime,
    paused_at: datetime | None,
    now: datetime,
) -> SkippedRange | None:
    """What resuming a ``catchup: none`` task drops for one trigger: every occurrence
    from its next fire time to now."""
    first = _first_from(trigger, next_fire_at, now)
    if first is None:
        return None
    last = _previous(trigger, now + _MICROSECOND, floor=first)
    since = f"paused at {paused_at.isoformat()}" if paused_at else "paused"
    return SkippedRange(
        task_id=task_id,
        trigger_position=position,
        reason=SkipReason.PAUSED,
        first=first,
        last=last,
        count=count(trigger, first, last),
        detail=f"{since}, resumed at {now.isoformat()}; catchup none skips the paused stretch",
    )


def replaced_drops(replaced: ReplacedTrigger, version: int, now: datetime) -> SkippedRange | None:
    """What applying `version` drops of a time trigger it replaced while behind: every
    pending occurrence from the old trigger's next fire time to now."""
    trigger = schedule.time_trigger(replaced.spec, replaced.position, replaced.next_fire_at)
    first = _first_from(trigger, replaced.next_fire_at, now)
    if first is None:
        return None
    last = _previous(trigger, now + _MICROSECOND, floor=first)
    return SkippedRange(
        task_id=replaced.task_id,
        trigger_position=replaced.position,
        reason=SkipReason.TRIGGER_CHANGED,
        first=first,
        last=last,
        count=count(trigger, first, last),
        detail=(
            f"it was {describe_trigger(trigger)}; version {version}, applied at "
            f"{now.isoformat()}, changed or removed it"
        ),
    )


def count(trigger: TimeTrigger, first: datetime, last: datetime) -> int | None:
    """Occurrences in [first, last] (both occurrences); None past COUNT_LIMIT."""
    if isinstance(trigger, Interval):
        return (last - first) // trigger.every + 1
    walked = sum(
        1 for _ in itertools.islice(schedule.occurrences(trigger, first, last), COUNT_LIMIT + 1)
    )
    return None if walked > COUNT_LIMIT else walked


def _older_segment(
    due: DueTrigger, trigger: TimeTrigger, past: Sequence[datetime]
) -> list[_Segment]:
    """The due occurrences older than the window the policy looked at."""
    if not past or past[0] <= due.next_fire_at:  # the usual case, on time: nothing older
        return []
    first = _first_from(trigger, due.next_fire_at, past[0])
    if first is None or first >= past[0]:
        return []
    last = _previous(trigger, past[0], floor=first)
    return [
        _Segment(
            first=first,
            last=last,
            count=count(trigger, first, last),
            reason=_policy_reason(due.task_spec),
        )
    ]


def _append(segments: list[_Segment], occurrence: datetime, reason: SkipReason) -> list[_Segment]:
    if segments and segments[-1].reason is reason:
        tail = segments[-1]
        grown = None if tail.count is None else tail.count + 1
        return [*segments[:-1], replace(tail, last=occurrence, count=grown)]
    return [*segments, _Segment(first=occurrence, last=occurrence, count=1, reason=reason)]


def _ranges(due: DueTrigger, segments: Sequence[_Segment]) -> list[SkippedRange]:
    ranges = []
    for index, segment in enumerate(segments):
        reason, detail = _reason_and_detail(due, segment)
        ranges.append(
            SkippedRange(
                task_id=due.task_id,
                trigger_position=due.position,
                reason=reason,
                first=segment.first,
                last=segment.last,
                count=segment.count,
                detail=detail,
                previous=due.last_fired_at if index == 0 else None,
            )
        )
    return ranges


def _reason_and_detail(due: DueTrigger, segment: _Segment) -> tuple[SkipReason, str]:
    detail = _policy_detail(due.task_spec, segment.reason)
    paused, resumed = due.paused_at, due.resumed_at
    if paused and resumed and paused - PAUSE_SLACK <= segment.first and segment.last <= resumed:
        stretch = f"paused at {paused.isoformat()}, resumed at {resumed.isoformat()}"
        return SkipReason.PAUSED, f"{stretch}; {detail}"
    return segment.reason, detail


def _policy_reason(spec: TaskSpec) -> SkipReason:
    if spec.catchup is Catchup.ALL:
        return SkipReason.MAX_CATCHUP
    if spec.catchup is Catchup.LATEST:
        return SkipReason.CATCHUP_LATEST
    return SkipReason.CATCHUP_NONE


def _filter_reason(spec: TaskSpec, occurrence: datetime, now: datetime) -> SkipReason:
    deadline = spec.starting_deadline
    if deadline is not None and now - occurrence > deadline:
        return SkipReason.STARTING_DEADLINE
    return SkipReason.CATCHUP_NONE


def _policy_detail(spec: TaskSpec, reason: SkipReason) -> str:
    if reason is SkipReason.STARTING_DEADLINE:
        return f"starting_deadline {spec.starting_deadline}: found too late to start"
    if reason is SkipReason.MAX_CATCHUP:
        return (
            f"catchup all runs only the newest max_catchup ({spec.max_catchup}) missed occurrences"
        )
    if reason is SkipReason.CATCHUP_LATEST:
        return "catchup latest runs only the newest missed occurrence"
    return "catchup none runs no missed occurrence"


def _first_from(trigger: TimeTrigger, start: datetime, end: datetime) -> datetime | None:
    """The first occurrence in [start, end], if any."""
    return next(iter(schedule.occurrences(trigger, start, end)), None)


def _previous(trigger: TimeTrigger, before: datetime, *, floor: datetime) -> datetime:
    """The last occurrence before `before`, at or after `floor` (itself an occurrence);
    the scan widens backwards from `before`, as the trigger loop's does."""
    lookback = timedelta(minutes=1)
    while True:
        start = max(floor, before - lookback)
        window = deque(schedule.occurrences(trigger, start, before - _MICROSECOND), maxlen=1)
        if window:
            return window[0]
        if start == floor:
            return floor
        lookback *= 60
