"""Durations as written in a spec (``"1h30m"``, ``"500ms"``) and their canonical text."""

from __future__ import annotations

import math
import re
from datetime import timedelta

from hydra.errors import InvalidArgument
from hydra.spec._problems import _show, _type_name

_ZERO = timedelta(0)


# --- durations --------------------------------------------------------------------

_UNITS = {
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
    "s": timedelta(seconds=1),
    "ms": timedelta(milliseconds=1),
    "us": timedelta(microseconds=1),
}
_NUMBER = r"\d+(?:\.\d+)?"
_DURATION_PART = re.compile(rf"({_NUMBER})(ms|us|d|h|m|s)")
_DURATION = re.compile(rf"(?:{_NUMBER}(?:ms|us|d|h|m|s))+")


def parse_duration(value: str | int | float, path: str) -> timedelta:
    """Parse a duration as written in a spec.

    Args:
        value: ``"500ms"``, ``"30s"``, ``"10m"``, ``"6h"``, ``"2d"``, a compound
            such as ``"1h30m"`` (also ``us``), or a number of seconds.
        path: The field, named in the error.

    Returns:
        The duration.

    Raises:
        InvalidArgument: ``value`` is not a duration.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        message = f"must be a duration such as '30s' or '1h30m', not {_type_name(value)}"
        raise InvalidArgument(message, path)
    try:
        return _duration(value)
    except (ValueError, OverflowError):
        message = f"invalid duration {_show(value)}; use e.g. 500ms, 30s, 10m, 6h, 2d or 1h30m"
        raise InvalidArgument(message, path) from None


def _duration(value: str | int | float) -> timedelta:
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(_NUMBER, text):
            return timedelta(seconds=float(text))
        if not _DURATION.fullmatch(text):
            raise ValueError(text)
        parts = _DURATION_PART.findall(text)
        return sum((float(number) * _UNITS[unit] for number, unit in parts), _ZERO)
    if not math.isfinite(value):
        raise ValueError(value)
    return timedelta(seconds=value)


def format_duration(duration: timedelta) -> str:
    """The canonical compact text of ``duration``, e.g. ``"1h30m"``, ``"500ms"``, ``"0s"``."""
    if duration < _ZERO:
        return "-" + format_duration(-duration)
    parts = []
    rest = duration
    for unit, size in _UNITS.items():
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
