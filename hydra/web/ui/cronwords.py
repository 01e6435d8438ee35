"""Cron expressions in words, for the common shapes ("every day at 02:30").

Anything else is shown as the raw expression: a wrong sentence is worse than
none, so only shapes read with certainty are put in words.
"""

from __future__ import annotations

import re

_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_DAY_NAMES = {name[:3].lower(): index for index, name in enumerate(_DAYS)}
_NUMBER = re.compile(r"\d{1,2}")
_STEP = re.compile(r"\*/(\d{1,2})")


def cron_words(expression: str, timezone: str = "UTC") -> str:
    """``"30 2 * * *", "Australia/Sydney"`` -> ``"every day at 02:30 Australia/Sydney"``;
    an expression of another shape -> ``"cron 1,2 3 * * * UTC"``."""
    zone = timezone or "UTC"
    fields = expression.split()
    if len(fields) == 6 and fields[0] == "0":
        fields = fields[1:]  # seconds first, on the minute
    words = _words(fields) if len(fields) == 5 else None
    if words is None:
        return f"cron {expression} {zone}"
    # The zone changes nothing for minute steps; it does for anything with an hour.
    return (
        words
        if words.startswith("every minute") or words.endswith("minutes")
        else f"{words} {zone}"
    )


def _words(fields: list[str]) -> str | None:
    minute, hour, day, month, weekday = fields
    if month != "*":
        return None
    if (minute, hour, day, weekday) == ("*", "*", "*", "*"):
        return "every minute"
    step = _STEP.fullmatch(minute)
    if step and (hour, day, weekday) == ("*", "*", "*"):
        return f"every {_plural(int(step.group(1)), 'minute')}"
    if not _NUMBER.fullmatch(minute):
        return None
    if (hour, day, weekday) == ("*", "*", "*"):
        return f"every hour at minute {int(minute)}"
    step = _STEP.fullmatch(hour)
    if step and (day, weekday) == ("*", "*"):
        return f"every {_plural(int(step.group(1)), 'hour')} at minute {int(minute)}"
    if not _NUMBER.fullmatch(hour):
        return None
    at = f"at {int(hour):02d}:{int(minute):02d}"
    if day == "*":
        days = _weekdays(weekday)
        return f"{days} {at}" if days else None
    if weekday == "*" and _NUMBER.fullmatch(day):
        return f"on day {int(day)} of every month {at}"
    return None


def _weekdays(field: str) -> str | None:
    if field == "*":
        return "every day"
    if field in ("1-5", "mon-fri", "MON-FRI"):
        return "every weekday"
    if field in ("0,6", "6,0", "sat,sun", "SAT,SUN"):
        return "every Saturday and Sunday"
    days = [_weekday(part) for part in field.split(",")]
    if None in days:
        return None
    names = [_DAYS[day] for day in days if day is not None]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"every {listed}"


def _weekday(part: str) -> int | None:
    if part.isdigit() and int(part) <= 7:
        return int(part) % 7
    return _DAY_NAMES.get(part.lower())


def _plural(count: int, unit: str) -> str:
    return unit if count == 1 else f"{count} {unit}s"
