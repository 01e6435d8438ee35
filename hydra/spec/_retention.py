"""The cluster's default retention as written on the command line
(``max_age=30d,keep_last=100,output_max_age=7d``), and any retention in words."""

from __future__ import annotations

from hydra.domain import Retention
from hydra.errors import InvalidArgument
from hydra.spec._durations import format_duration
from hydra.spec._parse import _parse_duration
from hydra.spec._problems import _join, _Problems
from hydra.spec._validate import _check_retention

_KEYS = ("max_age", "keep_last", "output_max_age")


def retention_from_text(text: str, path: str) -> Retention:
    """Parse ``key=value`` pairs separated by commas; ``""`` says nothing (keep forever).

    Raises:
        InvalidArgument: naming ``path`` (and the key) for an unknown key or a bad value.
    """
    problems = _Problems()
    fields: dict[str, object] = {}
    for pair in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in _KEYS:
            problems.add(path, f"expected {', '.join(k + '=...' for k in _KEYS)}, got {pair!r}")
        elif key == "keep_last":
            fields[key] = _whole(value.strip(), _join(path, key), problems)
        else:
            fields[key] = _parse_duration(value.strip(), _join(path, key), problems)
    retention = Retention(**fields)  # type: ignore[arg-type]  # None where unusable: reported
    if not problems.items:
        _check_retention(retention, path, problems)
    if problems.items:
        raise InvalidArgument(problems.items)
    return retention


def _whole(value: str, path: str, problems: _Problems) -> int | None:
    if value.isdigit():
        return int(value)
    problems.add(path, f"must be a whole number, got {value!r}")
    return None


def retention_in_words(retention: Retention) -> str:
    """The retention that applies to a task, in words (hydractl and the web UI)."""
    runs = "runs kept forever"
    if retention.max_age is not None:
        runs = f"runs kept {format_duration(retention.max_age)} after they end"
        if retention.keep_last:
            runs += f" (the newest {retention.keep_last} whatever their age)"
    output = "their output as long as they are kept"
    if retention.output_max_age is not None:
        output = f"their output {format_duration(retention.output_max_age)}"
    return f"{runs}, {output}; never the latest success nor an active run"
