"""When time triggers fire: pure functions over aware datetimes.

Every function takes aware datetimes (any zone) and returns UTC ones; none
reads the wall clock. Cron expressions have 5 fields (minute hour
day-of-month month day-of-week) or 6 with seconds first (second minute hour
day-of-month month day-of-week); ``@yearly``, ``@annually``, ``@monthly``,
``@weekly``, ``@daily``, ``@midnight`` and ``@hourly`` stand for their 5-field
forms. Hashed (``H``) and random (``R``) values are refused, because every
coordinator must compute the same occurrences.

DST rule (cron triggers)
------------------------

A cron expression is matched against the wall-clock time of its time zone.
A wall time that does not exist, because it falls in a spring-forward gap,
fires once, at the first instant after the gap (the transition instant):
``30 2 * * *`` in America/New_York fires at 03:00 EDT (07:00 UTC) on
2026-03-08, and several wall times in one gap fire together, once. A wall time
that occurs twice, because it falls in a fall-back fold, fires once, at its
first occurrence (the earlier instant, fold=0) -- unless the expression's hour
field matches every hour (``*``, ``*/1``, ``0-23``): such an expression fires
hourly or more often, so it fires at both occurrences, which are distinct
instants, and a per-minute job keeps running through the repeated hour.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from hydra.domain import At, Cron, Interval, TaskSpec, TimeTrigger
from hydra.errors import InvalidArgument

#: Shortest interval period accepted (proto ``IntervalTrigger.every``).
MIN_INTERVAL = timedelta(seconds=1)

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELD_NAMES = {
    5: ("minute", "hour", "day-of-month", "month", "day-of-week"),
    6: ("second", "minute", "hour", "day-of-month", "month", "day-of-week"),
}
_HASHED = re.compile(r"[hr](\(\d+-\d+\))?(/\d+)?", re.IGNORECASE)
_CRONITER_PREFIX = re.compile(r"^\[[^\]]*\]\s*")
_HOUR_FIELD = 1  # croniter's index of the hour field in an expansion
_MICROSECOND = timedelta(microseconds=1)
# Where validation looks for a first occurrence; any date would do.
_VALIDATION_START = datetime(2000, 1, 1)  # noqa: DTZ001 - a wall time on purpose


@dataclass(frozen=True, slots=True)
class _CronPlan:
    """A parsed cron expression, ready to search wall times."""

    matcher: croniter
    tick: timedelta  # the resolution of its matches: one minute or one second
    every_hour: bool  # hour field matches all 24 hours: both folds fire


@dataclass(frozen=True, slots=True)
class _Fold:
    """The wall times [start, end) that a fall-back repeats, and their offsets."""

    start: datetime
    end: datetime
    first_offset: timedelta
    second_offset: timedelta


# --- public API ---------------------------------------------------------------


def validate_trigger(trigger: TimeTrigger, path: str) -> None:
    """Refuse a time trigger that could not be scheduled.

    Args:
        trigger: The trigger to check.
        path: Field path for the problem, e.g. ``triggers[0]``.

    Raises:
        InvalidArgument: naming ``path``, with what is wrong.
    """
    if isinstance(trigger, Cron):
        _validate_cron(trigger, path)
    elif isinstance(trigger, Interval):
        _validate_interval(trigger, path)
    elif isinstance(trigger, At):
        if _is_naive(trigger.at):
            raise InvalidArgument("'at' must carry a time zone or UTC offset", path=f"{path}.at")
    else:
        raise TypeError(f"not a time trigger: {trigger!r}")


def next_fire(trigger: TimeTrigger, after: datetime) -> datetime | None:
    """The first occurrence strictly after ``after``, in UTC; None if there is none.

    Raises:
        ValueError: ``after`` is naive, an interval trigger has no anchor, or the
            trigger is one :func:`validate_trigger` refuses.
    """
    after = _utc(after, "after")
    if isinstance(trigger, Cron):
        return _next_cron_cached(trigger.expression, trigger.timezone, after)
    return _next_simple(trigger, after)


def occurrences(trigger: TimeTrigger, start: datetime, end: datetime) -> Iterator[datetime]:
    """Every occurrence ``t`` with ``start <= t <= end``, in order, lazily, in UTC.

    Raises:
        ValueError: ``start`` or ``end`` is naive, or an interval has no anchor.
    """
    start, end = _utc(start, "start"), _utc(end, "end")
    if isinstance(trigger, Interval):
        _check_interval(trigger)
    return _occurrences(trigger, start, end)


# --- validation ---------------------------------------------------------------


def _validate_cron(cron: Cron, path: str) -> None:
    try:
        zone_info(cron.timezone)
    except ValueError as error:
        raise InvalidArgument(str(error), path=f"{path}.timezone") from None
    try:
        plan = _plan(cron.expression)
    except ValueError as error:
        message = f"invalid cron expression {cron.expression!r}: {error}"
        raise InvalidArgument(message, path=f"{path}.cron") from None
    if _next_wall(plan, _VALIDATION_START) is None:
        message = f"invalid cron expression {cron.expression!r}: it never fires"
        raise InvalidArgument(message, path=f"{path}.cron")


def _validate_interval(interval: Interval, path: str) -> None:
    if interval.every < MIN_INTERVAL:
        raise InvalidArgument(
            f"interval must be at least 1 second, not {interval.every}", path=f"{path}.interval"
        )
    if interval.anchor is not None and _is_naive(interval.anchor):
        raise InvalidArgument(
            "interval anchor must carry a time zone or UTC offset", path=f"{path}.anchor"
        )


@functools.lru_cache(maxsize=1024)
def _plan(expression: str) -> _CronPlan:
    """Parse ``expression`` once; ValueError says what is wrong with it."""
    fields = _fields(expression)
    normalized = " ".join(fields)
    try:
        croniter.expand(normalized, second_at_beginning=True, strict=True)
        matcher = croniter(
            normalized, _VALIDATION_START, ret_type=datetime, second_at_beginning=True
        )
    except (ValueError, TypeError, KeyError, IndexError) as error:
        raise ValueError(_field_problem(fields) or _reason(error)) from None
    tick = timedelta(seconds=1) if len(fields) == 6 else timedelta(minutes=1)
    every_hour = matcher.expanded[_HOUR_FIELD] == ["*"]
    return _CronPlan(matcher=matcher, tick=tick, every_hour=every_hour)


def _fields(expression: str) -> list[str]:
    """Split an expression into its 5 or 6 fields, expanding an ``@`` alias."""
    stripped = expression.strip()
    if stripped.startswith("@"):
        if stripped.lower() not in _ALIASES:
            raise ValueError(f"unknown alias {stripped!r}")
        stripped = _ALIASES[stripped.lower()]
    fields = re.findall(r"\S+", stripped, re.ASCII)
    if len(fields) not in _FIELD_NAMES:
        raise ValueError(f"expected 5 fields, or 6 with seconds first; got {len(fields)}")
    for name, value in zip(_FIELD_NAMES[len(fields)], fields, strict=True):
        if any(_HASHED.fullmatch(part) for part in value.split(",")):
            raise ValueError(
                f"{name} field {value!r}: hashed (H) and random (R) values are not supported"
            )
    return fields


def _field_problem(fields: list[str]) -> str | None:
    """Name the first field croniter refuses on its own, with croniter's reason."""
    for index, (name, value) in enumerate(zip(_FIELD_NAMES[len(fields)], fields, strict=True)):
        probe = ["*"] * len(fields)
        probe[index] = value
        try:
            croniter.expand(" ".join(probe), second_at_beginning=True)
        except (ValueError, TypeError, KeyError, IndexError) as error:
            return f"{name} field {value!r}: {_reason(error)}"
    return None


def _reason(error: Exception) -> str:
    """croniter's message without the expression it repeats."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    reason = _CRONITER_PREFIX.sub("", lines[-1]).rstrip(".")
    unacceptable = re.fullmatch(r"is not acceptable[.,]?\s*(.*)", reason)
    if unacceptable:
        return unacceptable.group(1) or "not a valid value"
    return reason


@functools.lru_cache(maxsize=512)
def zone_info(name: str) -> ZoneInfo:
    """The IANA zone ``name`` (empty means UTC); ValueError if it is unknown."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r}") from None


# --- cron ---------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def _next_cron_cached(expression: str, timezone: str, after: datetime) -> datetime | None:
    # The trigger loop asks the same question for many tasks sharing an
    # expression and an occurrence; backfills go around this cache.
    return _next_cron(expression, timezone, after)


def _next_cron(expression: str, timezone: str, after: datetime) -> datetime | None:
    """First fire instant of a cron expression strictly after ``after`` (UTC)."""
    plan, zone = _plan(expression), zone_info(timezone)
    local = after.astimezone(zone)
    wall = local.replace(tzinfo=None)
    fold = _fold_around(wall, zone)
    if fold is None:
        match = _next_wall(plan, wall)
        return None if match is None else _fire_instant(match, zone)
    if local.fold == 0:
        return _next_in_first_pass(plan, zone, wall, fold)
    return _next_in_second_pass(plan, zone, wall, fold)


def _next_in_first_pass(
    plan: _CronPlan, zone: ZoneInfo, wall: datetime, fold: _Fold
) -> datetime | None:
    """Next fire after the first occurrence of the repeated wall time ``wall``."""
    match = _next_wall(plan, wall)
    if match is not None and match < fold.end:
        return _instant(match, fold.first_offset)
    if plan.every_hour:
        repeated = _next_wall(plan, fold.start - _MICROSECOND)
        if repeated is not None and repeated < fold.end:
            return _instant(repeated, fold.second_offset)
    return None if match is None else _fire_instant(match, zone)


def _next_in_second_pass(
    plan: _CronPlan, zone: ZoneInfo, wall: datetime, fold: _Fold
) -> datetime | None:
    """Next fire after the second occurrence of the repeated wall time ``wall``."""
    match = _next_wall(plan, wall)
    if match is not None and match < fold.end:
        if plan.every_hour:
            return _instant(match, fold.second_offset)
        # Repeated wall times fired in the first pass already.
        match = _next_wall(plan, fold.end - _MICROSECOND)
    return None if match is None else _fire_instant(match, zone)


def _next_wall(plan: _CronPlan, wall: datetime) -> datetime | None:
    """The first matching wall time strictly after ``wall`` (both naive, local)."""
    # Matches fall on whole ticks, so flooring keeps "strictly after" exact and
    # spares croniter's float timestamps any microseconds.
    if plan.tick == timedelta(minutes=1):
        wall = wall.replace(second=0, microsecond=0)
    else:
        wall = wall.replace(microsecond=0)
    # croniter is stateful and the plan is shared: search on a shallow clone
    # (cheaper than copy.copy; the expansion it shares is only read).
    matcher = croniter.__new__(croniter)
    matcher.__dict__.update(plan.matcher.__dict__)
    try:
        match: datetime = matcher.get_next(datetime, start_time=wall)
    except CroniterBadDateError:
        return None
    return match


def _fire_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant a matching wall time first fires at (a gap's end inside a gap)."""
    first, second = _offsets(wall, zone)
    if first < second:  # the wall time falls in a gap
        return _transition(zone, _instant(wall, second), _instant(wall, first))
    return _instant(wall, first)


def _fold_around(wall: datetime, zone: ZoneInfo) -> _Fold | None:
    """The fold that repeats ``wall``, or None if ``wall`` occurs once."""
    first, second = _offsets(wall, zone)
    if first <= second:
        return None
    change = _transition(zone, _instant(wall, first), _instant(wall, second))
    end = change.replace(tzinfo=None) + first
    return _Fold(start=end - (first - second), end=end, first_offset=first, second_offset=second)


def _transition(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The instant in (before, after] where the zone's offset changes to that of ``after``."""
    target = _offset_at(zone, math.ceil(after.timestamp()))
    low, high = math.floor(before.timestamp()), math.ceil(after.timestamp())
    while high - low > 1:  # tz transitions fall on whole seconds
        middle = (low + high) // 2
        if _offset_at(zone, middle) == target:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _offsets(wall: datetime, zone: ZoneInfo) -> tuple[timedelta, timedelta]:
    """UTC offsets of a wall time read with fold=0 and with fold=1."""
    first = wall.replace(tzinfo=zone, fold=0).utcoffset()
    second = wall.replace(tzinfo=zone, fold=1).utcoffset()
    assert first is not None and second is not None  # a ZoneInfo always knows
    return first, second


def _offset_at(zone: ZoneInfo, timestamp: int) -> timedelta | None:
    return datetime.fromtimestamp(timestamp, zone).utcoffset()


def _instant(wall: datetime, offset: timedelta) -> datetime:
    """The UTC instant of a naive wall time read at ``offset``."""
    return (wall - offset).replace(tzinfo=UTC)


# --- interval and at ------------------------------------------------------------


def _next_simple(trigger: Interval | At, after: datetime) -> datetime | None:
    """next_fire for the triggers that need no calendar."""
    if isinstance(trigger, At):
        at = _utc(trigger.at, "at")
        return at if at > after else None
    if not isinstance(trigger, Interval):
        raise TypeError(f"not a time trigger: {trigger!r}")
    anchor = _check_interval(trigger)
    if after < anchor:
        return anchor
    # Both in UTC: arithmetic on zoned datetimes would follow the wall clock.
    periods = (after - anchor) // trigger.every + 1
    return anchor + periods * trigger.every


def _check_interval(interval: Interval) -> datetime:
    """The interval's anchor in UTC; ValueError if it cannot be scheduled."""
    if interval.anchor is None:
        raise ValueError("interval trigger has no anchor; it is set when the task is applied")
    if interval.every <= timedelta(0):
        raise ValueError(f"interval must be positive, not {interval.every}")
    return _utc(interval.anchor, "anchor")


def _occurrences(trigger: TimeTrigger, start: datetime, end: datetime) -> Iterator[datetime]:
    occurrence = _next_uncached(trigger, start - _MICROSECOND)
    while occurrence is not None and occurrence <= end:
        yield occurrence
        occurrence = _next_uncached(trigger, occurrence)


def _next_uncached(trigger: TimeTrigger, after: datetime) -> datetime | None:
    if isinstance(trigger, Cron):
        return _next_cron(trigger.expression, trigger.timezone, after)
    return _next_simple(trigger, after)


# --- helpers ------------------------------------------------------------------


def _is_naive(moment: datetime) -> bool:
    return moment.tzinfo is None or moment.utcoffset() is None


def _utc(moment: datetime, name: str) -> datetime:
    """``moment`` in UTC; ValueError if it is naive."""
    if _is_naive(moment):
        raise ValueError(f"{name} must be an aware datetime, not {moment!r}")
    return moment.astimezone(UTC)


def time_trigger(spec: TaskSpec, position: int, anchor: datetime) -> TimeTrigger:
    """The time trigger at `position`, with an interval anchored when it has none."""
    trigger = spec.triggers[position]
    assert isinstance(trigger, Cron | Interval | At), "only time triggers are stored as due"
    if isinstance(trigger, Interval) and trigger.anchor is None:
        return replace(trigger, anchor=anchor)
    return trigger


def first_fire(trigger: TimeTrigger, now: datetime) -> datetime | None:
    """When a newly applied trigger fires first: its next occurrence after now
    (an interval without an anchor: one period from now)."""
    if isinstance(trigger, Interval) and trigger.anchor is None:
        return now.replace(microsecond=0) + trigger.every
    return next_fire(trigger, now)
