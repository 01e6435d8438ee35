"""When time triggers fire, with the DST rule of hydra.coordinator.schedule."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hydra.coordinator.schedule import next_fire, occurrences, validate_trigger
from hydra.domain import At, Cron, Interval
from hydra.errors import InvalidArgument

MINUTE = timedelta(minutes=1)
SECOND = timedelta(seconds=1)


def utc(text: str) -> datetime:
    """An aware UTC datetime from ``YYYY-MM-DDTHH:MM[:SS]``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(expression: str, timezone: str, start: str, end: str) -> list[datetime]:
    return list(occurrences(Cron(expression=expression, timezone=timezone), utc(start), utc(end)))


# --- expressions ------------------------------------------------------------------


def test_five_fields_fire_strictly_after() -> None:
    cron = Cron(expression="*/15 * * * *")
    assert next_fire(cron, utc("2026-05-01T10:07:31")) == utc("2026-05-01T10:15")
    assert next_fire(cron, utc("2026-05-01T10:15")) == utc("2026-05-01T10:30")
    assert next_fire(cron, utc("2026-05-01T10:14:59.999999")) == utc("2026-05-01T10:15")


def test_six_fields_put_seconds_first() -> None:
    # croniter alone would read the sixth field as the seconds.
    cron = Cron(expression="15 30 2 * * *", timezone="Europe/Berlin")
    assert next_fire(cron, utc("2026-05-01T00:00")) == utc("2026-05-01T00:30:15")


def test_six_fields_every_two_seconds() -> None:
    got = fires("*/2 * * * * *", "UTC", "2026-05-01T10:00:00", "2026-05-01T10:00:09")
    assert [t.second for t in got] == [0, 2, 4, 6, 8]


def test_aliases_stand_for_five_fields() -> None:
    cron = Cron(expression="@daily", timezone="Australia/Sydney")
    assert next_fire(cron, utc("2026-05-01T00:00")) == utc("2026-05-01T14:00")


def test_results_are_utc_for_aware_input_in_any_zone() -> None:
    after = datetime(2026, 5, 1, 12, 7, tzinfo=ZoneInfo("Asia/Tokyo"))
    got = next_fire(Cron(expression="*/15 * * * *"), after)
    assert got == utc("2026-05-01T03:15")
    assert got is not None and got.tzinfo is UTC


def test_naive_datetimes_are_refused() -> None:
    cron = Cron(expression="* * * * *")
    with pytest.raises(ValueError, match="aware"):
        next_fire(cron, datetime(2026, 5, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="aware"):
        occurrences(cron, datetime(2026, 5, 1), utc("2026-05-02T00:00"))  # noqa: DTZ001


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("61 * * * *", "minute field '61': out of range"),
        ("0 24 * * *", "hour field '24': out of range"),
        ("60 * * * * *", "second field '60': out of range"),
        ("* * * *", "expected 5 fields, or 6 with seconds first; got 4"),
        ("1 2 3 4 5 6 7", "got 7"),
        ("", "got 0"),
        ("*/0 * * * *", "minute field '*/0'"),
        ("0 0 30 2 *", "can never occur"),
        ("H * * * *", "hashed (H) and random (R) values are not supported"),
        ("0 R * * *", "hashed (H) and random (R) values are not supported"),
        ("@reboot", "unknown alias '@reboot'"),
        ("0 0 * * mon#9", "day-of-week field 'mon#9'"),
    ],
)
def test_invalid_expressions_are_refused(expression: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_trigger(Cron(expression=expression), "triggers[0]")
    (problem,) = caught.value.problems
    assert problem.path == "triggers[0].cron"
    assert problem.message.startswith(f"invalid cron expression {expression!r}: ")
    assert reason in problem.message


def test_six_field_expression_with_bad_seconds_is_refused() -> None:
    # "0 0 1 1 * 2030": the last field is a day of week in the 6-field form.
    with pytest.raises(InvalidArgument, match="day-of-week field '2030'"):
        validate_trigger(Cron(expression="0 0 1 1 * 2030"), "triggers[0]")


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "America", "../../etc/passwd", "utc+1"])
def test_unknown_zones_are_refused(zone: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_trigger(Cron(expression="* * * * *", timezone=zone), "triggers[1]")
    assert str(caught.value) == f"triggers[1].timezone: unknown time zone {zone!r}"


@pytest.mark.parametrize(
    "trigger",
    [
        Cron(expression="30 2 * * *", timezone="Australia/Sydney"),
        Cron(expression="0 9 * * mon-fri", timezone=""),
        Cron(expression="0 0 29 2 *"),
        Cron(expression="0 0 L * *"),
        Cron(expression="*/2 * * * * *"),
        Cron(expression="@hourly"),
        Interval(every=timedelta(seconds=1)),
        Interval(every=timedelta(hours=1), anchor=utc("2026-01-01T00:00")),
        At(at=utc("2026-01-01T00:00")),
    ],
)
def test_valid_triggers_pass(trigger: Cron | Interval | At) -> None:
    validate_trigger(trigger, "triggers[0]")


@pytest.mark.parametrize(
    ("trigger", "message"),
    [
        (Interval(every=timedelta(0)), "at least 1 second"),
        (Interval(every=timedelta(milliseconds=500)), "at least 1 second"),
        (Interval(every=timedelta(hours=1), anchor=datetime(2026, 1, 1)), "anchor"),  # noqa: DTZ001
        (At(at=datetime(2026, 1, 1)), "time zone"),  # noqa: DTZ001
    ],
)
def test_invalid_intervals_and_instants_are_refused(trigger: Interval | At, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        validate_trigger(trigger, "triggers[0]")


# --- DST: the documented instants -------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "start", "end", "expected"),
    [
        # Sydney falls back on 2026-04-05 (03:00 AEDT -> 02:00 AEST): 02:30 twice,
        # fires once, at the first one (AEDT).
        (
            "Australia/Sydney",
            "2026-04-03T12:00",
            "2026-04-06T12:00",
            ["2026-04-03T15:30", "2026-04-04T15:30", "2026-04-05T16:30"],
        ),
        # Sydney springs forward on 2026-10-04 (02:00 AEST -> 03:00 AEDT): no 02:30,
        # fires at 03:00 AEDT.
        (
            "Australia/Sydney",
            "2026-10-02T12:00",
            "2026-10-05T12:00",
            ["2026-10-02T16:30", "2026-10-03T16:00", "2026-10-04T15:30"],
        ),
        # New York springs forward on 2026-03-08 (02:00 EST -> 03:00 EDT): 03:00 EDT.
        (
            "America/New_York",
            "2026-03-07T00:00",
            "2026-03-10T00:00",
            ["2026-03-07T07:30", "2026-03-08T07:00", "2026-03-09T06:30"],
        ),
        # New York falls back on 2026-11-01 (02:00 EDT -> 01:00 EST): 02:30 once, EST.
        (
            "America/New_York",
            "2026-10-31T00:00",
            "2026-11-03T00:00",
            ["2026-10-31T06:30", "2026-11-01T07:30", "2026-11-02T07:30"],
        ),
    ],
)
def test_half_past_two_across_dst(zone: str, start: str, end: str, expected: list[str]) -> None:
    assert fires("30 2 * * *", zone, start, end) == [utc(text) for text in expected]


def test_repeated_wall_time_fires_once_at_its_first_occurrence() -> None:
    got = fires("30 1 * * *", "America/New_York", "2026-10-31T00:00", "2026-11-03T00:00")
    assert got == [utc("2026-10-31T05:30"), utc("2026-11-01T05:30"), utc("2026-11-02T06:30")]


def test_after_inside_the_second_fold_does_not_fire_the_repeated_time_again() -> None:
    cron = Cron(expression="30 1 * * *", timezone="America/New_York")
    # 01:45 EDT (first pass) and 01:15 / 01:45 EST (second pass).
    for after in ("2026-11-01T05:45", "2026-11-01T06:15", "2026-11-01T06:45"):
        assert next_fire(cron, utc(after)) == utc("2026-11-02T06:30")
    # 01:15 EDT: 01:30 EDT is still to come.
    assert next_fire(cron, utc("2026-11-01T05:15")) == utc("2026-11-01T05:30")


def test_every_half_hour_fires_in_both_folds() -> None:
    got = fires("*/30 * * * *", "America/New_York", "2026-11-01T04:00", "2026-11-01T08:00")
    # 00:00 EDT ... 01:30 EDT, 01:00 EST, 01:30 EST, 02:00 EST ...
    assert got == [utc("2026-11-01T04:00") + k * timedelta(minutes=30) for k in range(9)]


def test_every_half_hour_continues_from_inside_the_second_fold() -> None:
    cron = Cron(expression="*/30 * * * *", timezone="America/New_York")
    assert next_fire(cron, utc("2026-11-01T05:40")) == utc("2026-11-01T06:00")  # 01:40 EDT
    assert next_fire(cron, utc("2026-11-01T06:00")) == utc("2026-11-01T06:30")  # 01:00 EST
    assert next_fire(cron, utc("2026-11-01T06:10")) == utc("2026-11-01T06:30")  # 01:10 EST
    assert next_fire(cron, utc("2026-11-01T06:30")) == utc("2026-11-01T07:00")  # 01:30 EST


def test_every_half_hour_across_spring_forward_has_no_duplicates() -> None:
    got = fires("*/30 * * * *", "America/New_York", "2026-03-08T05:00", "2026-03-08T09:00")
    # 00:00 EST ... 01:30 EST, then 03:00 EDT (02:00 and 02:30 collapse into it), 03:30 ...
    assert got == [utc("2026-03-08T05:00") + k * timedelta(minutes=30) for k in range(9)]


def test_several_wall_times_in_one_gap_fire_once() -> None:
    got = fires("*/15 2 * * *", "America/New_York", "2026-03-07T12:00", "2026-03-09T12:00")
    assert got == [
        utc("2026-03-08T07:00"),  # 02:00, 02:15, 02:30 and 02:45 do not exist
        utc("2026-03-09T06:00"),
        utc("2026-03-09T06:15"),
        utc("2026-03-09T06:30"),
        utc("2026-03-09T06:45"),
    ]


def test_every_two_seconds_through_the_fold_stays_two_seconds_apart() -> None:
    # 06:00Z is 02:00 EDT becoming 01:00 EST.
    got = fires("*/2 * * * * *", "America/New_York", "2026-11-01T05:59:50", "2026-11-01T06:00:10")
    assert got == [utc("2026-11-01T05:59:50") + k * 2 * SECOND for k in range(11)]


def test_a_skipped_day_fires_once_at_the_first_instant_after_it() -> None:
    # Samoa skipped 2011-12-30 entirely, moving across the date line.
    got = fires("0 12 * * *", "Pacific/Apia", "2011-12-28T00:00", "2011-12-31T12:00")
    assert got == [
        utc("2011-12-28T22:00"),  # 12:00 -10:00
        utc("2011-12-29T22:00"),  # 12:00 -10:00, the day ends at 24:00 -10:00 ...
        utc("2011-12-30T10:00"),  # ... which is 2011-12-31 00:00 +14:00
        utc("2011-12-30T22:00"),  # 2011-12-31 12:00 +14:00
    ]


# --- DST: against a brute-force reading of the rule ---------------------------------

Match = Callable[[datetime], bool]


def rule(expression: str, match: Match, every_hour: bool) -> Any:
    """A parameter set: the expression, the same schedule in Python, its fold rule."""
    return pytest.param(expression, match, every_hour, id=expression)


def oracle(
    match: Match, every_hour: bool, zone: ZoneInfo, start: datetime, end: datetime, tick: timedelta
) -> list[datetime]:
    """The rule, read literally, by walking every tick of real time.

    A matching wall time fires at the first instant whose wall time reaches it
    (a gap's end for a wall time in a gap); wall times that come round again
    after a fall-back fire again only for expressions that fire every hour.
    """
    result = []
    highest = (start - tick).astimezone(zone).replace(tzinfo=None)
    instant = start
    while instant <= end:
        wall = instant.astimezone(zone).replace(tzinfo=None)
        if wall > highest:
            if any(match(w) for w in walls_between(highest, wall, tick)):
                result.append(instant)
            highest = wall
        elif every_hour and match(wall):
            result.append(instant)
        instant += tick
    return result


def walls_between(low: datetime, high: datetime, tick: timedelta) -> Iterator[datetime]:
    """Wall times in (low, high], one tick apart."""
    wall = low + tick
    while wall <= high:
        yield wall
        wall += tick


def transitions(zone: ZoneInfo, year: int) -> list[datetime]:
    """Days (UTC midnight) on which the zone's offset changes during ``year``."""
    day = datetime(year, 1, 1, tzinfo=UTC)
    days = []
    while day.year == year:
        if (
            day.astimezone(zone).utcoffset()
            != (day + timedelta(days=1)).astimezone(zone).utcoffset()
        ):
            days.append(day)
        day += timedelta(days=1)
    return days


EXPRESSIONS = [
    rule("*/15 * * * *", lambda w: w.minute % 15 == 0, True),
    rule("0 * * * *", lambda w: w.minute == 0, True),
    rule("30 2 * * *", lambda w: (w.hour, w.minute) == (2, 30), False),
    rule("30 1 * * *", lambda w: (w.hour, w.minute) == (1, 30), False),
    rule("*/10 1-2 * * *", lambda w: w.hour in (1, 2) and w.minute % 10 == 0, False),
    rule("15,45 0-3 * * *", lambda w: w.hour <= 3 and w.minute in (15, 45), False),
    rule("0,30 0 * * *", lambda w: w.hour == 0 and w.minute in (0, 30), False),
]
ZONES = [
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",  # half-hour shifts
    "Europe/London",
    "Pacific/Chatham",  # +12:45 / +13:45
    "America/Santiago",  # changes at midnight
    "America/Havana",  # changes at 00:00 / 01:00
]


@pytest.mark.parametrize("zone_name", ZONES)
@pytest.mark.parametrize(
    ("expression", "match", "every_hour"),
    EXPRESSIONS,
)
def test_matches_the_rule_around_every_transition(
    zone_name: str, expression: str, match: Match, every_hour: bool
) -> None:
    zone = ZoneInfo(zone_name)
    cron = Cron(expression=expression, timezone=zone_name)
    for day in transitions(zone, 2026):
        start, end = day - timedelta(hours=12), day + timedelta(hours=36)
        expected = oracle(match, every_hour, zone, start, end, MINUTE)
        assert list(occurrences(cron, start, end)) == expected, day
        check_next_fire_from_anywhere(cron, expected, start, end)


def check_next_fire_from_anywhere(
    cron: Cron, expected: list[datetime], start: datetime, end: datetime
) -> None:
    """next_fire from any instant (odd seconds, microseconds) agrees with the list."""
    after = start
    while after < expected[-1]:
        index = bisect.bisect_right(expected, after)
        assert next_fire(cron, after) == expected[index], after
        after += timedelta(minutes=7, seconds=13, microseconds=1)


@pytest.mark.parametrize(
    ("expression", "match", "every_hour"),
    [
        rule("*/20 * * * * *", lambda w: w.second % 20 == 0, True),
        rule(
            "*/20 30 1 * * *", lambda w: (w.hour, w.minute) == (1, 30) and w.second % 20 == 0, False
        ),
        rule("0 */5 2 * * *", lambda w: w.hour == 2 and w.minute % 5 == 0 and w.second == 0, False),
    ],
)
@pytest.mark.parametrize("zone_name", ["America/New_York", "Australia/Lord_Howe"])
def test_six_fields_match_the_rule_around_transitions(
    zone_name: str, expression: str, match: Match, every_hour: bool
) -> None:
    zone = ZoneInfo(zone_name)
    cron = Cron(expression=expression, timezone=zone_name)
    for day in transitions(zone, 2026):
        start = next(t for t in (day + k * MINUTE for k in range(1440 * 2)) if is_change(zone, t))
        start, end = start - timedelta(minutes=90), start + timedelta(minutes=150)
        expected = oracle(match, every_hour, zone, start, end, SECOND)
        assert list(occurrences(cron, start, end)) == expected, day


def is_change(zone: ZoneInfo, instant: datetime) -> bool:
    return instant.astimezone(zone).utcoffset() != (instant - MINUTE).astimezone(zone).utcoffset()


# --- monotonicity over a year ---------------------------------------------------------


@pytest.mark.parametrize(
    "zone_name", ["America/New_York", "Australia/Sydney", "Australia/Lord_Howe", "UTC"]
)
@pytest.mark.parametrize("expression", ["0 * * * *", "30 2 * * *", "45 1,2 * * *", "0 0 * * 0"])
def test_iterating_next_fire_is_strictly_increasing_for_a_year(
    zone_name: str, expression: str
) -> None:
    cron = Cron(expression=expression, timezone=zone_name)
    end = utc("2027-01-01T00:00")
    seen = [utc("2026-01-01T00:00")]
    while (following := next_fire(cron, seen[-1])) is not None and following < end:
        assert following > seen[-1]
        seen.append(following)
    assert len(seen) == len(set(seen))
    assert seen[1:] == list(occurrences(cron, seen[1], end - SECOND))


@pytest.mark.parametrize("zone_name", ["America/New_York", "Australia/Sydney", "Pacific/Chatham"])
def test_a_daily_time_fires_exactly_once_every_local_day(zone_name: str) -> None:
    got = fires("30 2 * * *", zone_name, "2026-01-01T00:00", "2026-12-31T00:00")
    days = [t.astimezone(ZoneInfo(zone_name)).date() for t in got]
    assert days == [days[0] + timedelta(days=k) for k in range(len(days))]


# --- intervals, instants, ranges ---------------------------------------------------


def test_interval_counts_real_time_from_its_anchor() -> None:
    # The anchor is in New York; 24 h later is not the same wall time after DST.
    anchor = datetime(2026, 3, 7, 12, 0, tzinfo=ZoneInfo("America/New_York"))
    interval = Interval(every=timedelta(hours=24), anchor=anchor)
    assert next_fire(interval, utc("2026-03-01T00:00")) == utc("2026-03-07T17:00")
    assert next_fire(interval, utc("2026-03-07T17:00")) == utc("2026-03-08T17:00")
    assert next_fire(interval, utc("2026-03-08T16:59:59")) == utc("2026-03-08T17:00")


def test_interval_without_anchor_is_refused() -> None:
    with pytest.raises(ValueError, match="no anchor"):
        next_fire(Interval(every=timedelta(minutes=5)), utc("2026-03-01T00:00"))
    with pytest.raises(ValueError, match="no anchor"):
        occurrences(
            Interval(every=timedelta(minutes=5)), utc("2026-03-01T00:00"), utc("2027-01-01T00:00")
        )


def test_interval_occurrences_include_both_ends() -> None:
    interval = Interval(every=timedelta(minutes=20), anchor=utc("2026-03-01T00:05"))
    got = list(occurrences(interval, utc("2026-03-01T00:25"), utc("2026-03-01T01:05")))
    assert got == [utc("2026-03-01T00:25"), utc("2026-03-01T00:45"), utc("2026-03-01T01:05")]


def test_at_fires_once_strictly_after() -> None:
    trigger = At(at=datetime(2026, 3, 1, 9, 0, tzinfo=ZoneInfo("Asia/Kolkata")))
    instant = utc("2026-03-01T03:30")
    assert next_fire(trigger, instant - SECOND) == instant
    assert next_fire(trigger, instant) is None
    assert list(occurrences(trigger, instant, instant)) == [instant]
    assert list(occurrences(trigger, instant + SECOND, instant + MINUTE)) == []


def test_cron_occurrences_include_both_ends() -> None:
    got = fires("0 * * * *", "UTC", "2026-03-01T01:00", "2026-03-01T03:00")
    assert got == [utc("2026-03-01T01:00"), utc("2026-03-01T02:00"), utc("2026-03-01T03:00")]
    assert fires("0 * * * *", "UTC", "2026-03-01T01:01", "2026-03-01T01:59") == []
    assert fires("0 * * * *", "UTC", "2026-03-01T03:00", "2026-03-01T01:00") == []


def test_occurrences_are_lazy() -> None:
    every_second = Cron(expression="* * * * * *")
    got = occurrences(every_second, utc("2026-01-01T00:00"), utc("2126-01-01T00:00"))
    assert list(itertools.islice(got, 3)) == [
        utc("2026-01-01T00:00") + k * SECOND for k in range(3)
    ]


def test_next_fire_far_ahead_and_after_the_end() -> None:
    assert next_fire(Cron(expression="0 0 1 1 *"), utc("2026-06-01T00:00")) == utc(
        "2027-01-01T00:00"
    )
    assert next_fire(At(at=utc("2026-01-01T00:00")), utc("2026-06-01T00:00")) is None
