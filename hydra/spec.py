"""Task specs: parse the YAML shape of DESIGN §5, validate, and give the canonical form.

Shared by the client and the coordinator, so it imports nothing from either and
needs only PyYAML. Every problem is reported at once, as one ``InvalidArgument``
holding a ``FieldProblem`` per problem. Paths use the YAML field names
(``triggers[0].cron``, ``preconditions[1].tcp``), also for typed specs.

Parsing happens in two steps. The parsers only convert shapes and types: a value
that cannot be converted is a *parse problem*, and the spec gets ``None`` in its
place. Validation then checks the typed spec; it tolerates wrong types, so its
problems about a field that failed to parse are left out (they would repeat it).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from hydra.domain import (
    After,
    At,
    Catchup,
    CommandCheck,
    Concurrency,
    Cron,
    FileCheck,
    HttpCheck,
    Interval,
    OnTimeout,
    Overlap,
    Precondition,
    Retry,
    TaskSpec,
    TcpCheck,
    Trigger,
)
from hydra.errors import FieldProblem, InvalidArgument

__all__ = [
    "format_duration",
    "load_task_documents",
    "parse_duration",
    "task_from_dict",
    "task_to_dict",
    "validate_parsed_task",
    "validate_task",
]

NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,127}"
#: Longest single string of a spec (a command element, an env value...), in UTF-8 bytes.
MAX_STRING_BYTES = 128 * 1024
#: Longest total of all strings of a spec, in UTF-8 bytes.
MAX_SPEC_BYTES = 1024 * 1024
#: Longest duration; well inside what google.protobuf.Duration can carry.
MAX_DURATION = timedelta(days=36500)

_NAME = re.compile(NAME_PATTERN)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CRON_NAMES = "SUN|MON|TUE|WED|THU|FRI|SAT|JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC"
_CRON_FIELD = re.compile(rf"(?:[0-9*,/?#LW-]|{_CRON_NAMES})+", re.IGNORECASE)
_CRON_ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
_ZERO = timedelta(0)
_SECOND = timedelta(seconds=1)

_T = TypeVar("_T")
#: Checks one field of a typed spec: (value, path, problems).
_Check = Callable[[Any, str, "_Problems"], object]
_E = TypeVar("_E", bound=enum.Enum)


# --- problems and paths -----------------------------------------------------------


class _Problems:
    """The problems found so far."""

    def __init__(self) -> None:
        self.items: list[FieldProblem] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(FieldProblem(path=path, message=message))

    def extend(self, problems: Iterable[FieldProblem]) -> None:
        self.items.extend(problems)


def _join(path: str, name: str | int) -> str:
    """``path`` extended by a field name or a list index."""
    if isinstance(name, int):
        return f"{path}[{name}]"
    return f"{path}.{name}" if path else name


def _inside(path: str, ancestor: str) -> bool:
    """True when ``path`` is ``ancestor`` or lies inside it."""
    if not ancestor or path == ancestor:
        return True
    return path.startswith((ancestor + ".", ancestor + "["))


def _type_name(value: object) -> str:
    """The YAML word for the type of ``value``."""
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}
    names |= {type(None): "null", list: "a list", tuple: "a list", dict: "a mapping"}
    return names.get(type(value), type(value).__name__)


def _show(value: object) -> str:
    """``repr(value)``, shortened: messages must not echo a 10 MB argument."""
    text = repr(value[:61] if isinstance(value, str) else value)
    return text if len(text) <= 60 else text[:57] + "..."


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


# --- validation of typed specs ----------------------------------------------------


def validate_task(spec: TaskSpec, path: str = "") -> None:
    """Check everything about a typed spec that can be checked without a database.

    Cron expressions are only checked for their shape here; the coordinator
    parses them fully.

    Args:
        spec: The spec, as built by the SDK, ``task_from_dict`` or the wire layer.
        path: Prefix of every problem's path, e.g. ``"spec"``.

    Raises:
        InvalidArgument: With one ``FieldProblem`` per problem found.
    """
    validate_parsed_task(spec, path, ())


def validate_parsed_task(spec: TaskSpec, path: str, parse_problems: Sequence[FieldProblem]) -> None:
    """Raise the problems met while building ``spec`` along with its own.

    Where a value could not be converted, the builder put ``None`` in the spec;
    validation problems at or inside such a field repeat the parse problem and
    are left out. (A placeholder only removes strings and elements, so it cannot
    cause a problem about an enclosing field.)

    Args:
        spec: The spec built, with ``None`` where a value was unusable.
        path: Prefix of every problem's path.
        parse_problems: The problems met while building ``spec``.

    Raises:
        InvalidArgument: When there is any problem.
    """
    found = _Problems()
    _check_task(spec, path, found)
    kept = [p for p in found.items if not any(_inside(p.path, q.path) for q in parse_problems)]
    if parse_problems or kept:
        raise InvalidArgument([*parse_problems, *kept])


def _check_task(spec: object, path: str, problems: _Problems) -> None:
    if not isinstance(spec, TaskSpec):
        problems.add(path, f"must be a TaskSpec, not {_type_name(spec)}")
        return
    for name, check in _FIELD_CHECKS:
        check(getattr(spec, name), _join(path, name), problems)
    # These need more than one field.
    _check_shell(spec, path, problems)
    _check_triggers(spec.triggers, _join(path, "triggers"), problems, spec.name)
    _check_strings(spec, path, problems)


def _is(value: object, kind: type[_T], what: str, path: str, problems: _Problems) -> TypeGuard[_T]:
    """True if ``value`` is a ``kind`` (a bool is no int); otherwise records a problem."""
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return True
    problems.add(path, f"must be {what}, not {_type_name(value)}")
    return False


def _check_str(value: object, path: str, problems: _Problems) -> None:
    _is(value, str, "a string", path, problems)


def _check_non_empty(value: object, path: str, problems: _Problems) -> TypeGuard[str]:
    if not _is(value, str, "a string", path, problems):
        return False
    if not value:
        problems.add(path, "must not be empty")
    return bool(value)


def _check_bool(value: object, path: str, problems: _Problems) -> None:
    _is(value, bool, "a boolean", path, problems)


def _check_name(value: object, path: str, problems: _Problems) -> bool:
    if not _is(value, str, "a task name", path, problems):
        return False
    if not _NAME.fullmatch(value):
        problems.add(path, f"{_show(value)} is not a task name; use {NAME_PATTERN}")
        return False
    return True


def _check_int(value: object, path: str, problems: _Problems, low: int, high: int) -> None:
    if _is(value, int, "an integer", path, problems) and not low <= value <= high:
        problems.add(path, f"must be between {low} and {high}, got {value}")


def _int_range(low: int, high: int) -> _Check:
    return lambda value, path, problems: _check_int(value, path, problems, low, high)


def _check_enum(value: object, path: str, problems: _Problems, kind: type[Any]) -> None:
    try:
        kind(value)
    except (ValueError, TypeError):
        choices = ", ".join(member.value for member in kind)
        problems.add(path, f"must be one of {choices}, got {_show(value)}")


def _enum(kind: type[Any]) -> _Check:
    return lambda value, path, problems: _check_enum(value, path, problems, kind)


def _check_duration(
    value: object, path: str, problems: _Problems, minimum: timedelta, *, positive: bool
) -> None:
    if not _is(value, timedelta, "a duration", path, problems):
        return
    if positive and value <= _ZERO:
        problems.add(path, f"must be positive, got {format_duration(value)}")
    elif value < _ZERO:
        problems.add(path, f"must not be negative, got {format_duration(value)}")
    elif value < minimum:
        message = f"must be at least {format_duration(minimum)}"
        problems.add(path, f"{message}, got {format_duration(value)}")
    elif value > MAX_DURATION:
        problems.add(path, f"must be at most {format_duration(MAX_DURATION)}")


def _duration_check(minimum: timedelta = _ZERO, *, positive: bool, optional: bool) -> _Check:
    """A check of a duration field; ``optional`` ones may be ``None``."""

    def check(value: object, path: str, problems: _Problems) -> None:
        if value is not None or not optional:
            _check_duration(value, path, problems, minimum, positive=positive)

    return check


def _check_aware(value: object, path: str, problems: _Problems) -> None:
    if not _is(value, datetime, "a date-time", path, problems):
        return
    if value.utcoffset() is None:
        problems.add(path, "must have a UTC offset, e.g. 2025-01-31T02:30:00+11:00")
        return
    try:
        value.astimezone(UTC)
    except OverflowError:
        problems.add(path, "is out of range")


def _check_command(value: object, path: str, problems: _Problems) -> None:
    if not _is(value, tuple, "a list of strings", path, problems):
        return
    if not value:
        problems.add(path, "must not be empty")
    for index, argument in enumerate(value):
        _check_str(argument, _join(path, index), problems)
    if value and value[0] == "":
        problems.add(_join(path, 0), "the program must not be empty")


def _check_shell(spec: TaskSpec, path: str, problems: _Problems) -> None:
    if spec.shell is True and isinstance(spec.command, tuple) and len(spec.command) != 1:
        message = f"with shell: true, must have exactly one element, got {len(spec.command)}"
        problems.add(_join(path, "command"), message)


def _check_map(
    value: object, path: str, problems: _Problems, check_key: Callable[[str, str, _Problems], None]
) -> None:
    if not isinstance(value, Mapping):
        problems.add(path, f"must be a mapping of strings, not {_type_name(value)}")
        return
    for key, item in value.items():
        if not isinstance(key, str):
            problems.add(path, f"keys must be strings, got {_show(key)}")
            continue
        check_key(key, path, problems)
        _check_str(item, _join(path, key), problems)


def _env_key(key: str, path: str, problems: _Problems) -> None:
    if not _ENV_NAME.fullmatch(key):
        problems.add(_join(path, key), "is not a variable name; use [A-Za-z_][A-Za-z0-9_]*")


def _non_empty_key(key: str, path: str, problems: _Problems) -> None:
    if not key:
        problems.add(path, "keys must not be empty")


def _check_selector(value: object, path: str, problems: _Problems) -> None:
    _check_map(value, path, problems, _non_empty_key)
    for key, item in value.items() if isinstance(value, Mapping) else ():
        if item == "":
            problems.add(_join(path, key), "must not be empty")


def _map_check(check_key: Callable[[str, str, _Problems], None]) -> _Check:
    return lambda value, path, problems: _check_map(value, path, problems, check_key)


def _check_retry(retry: object, path: str, problems: _Problems) -> None:
    if not _is(retry, Retry, "a Retry", path, problems):
        return
    _check_int(retry.max_attempts, _join(path, "max_attempts"), problems, 1, 100)
    _check_duration(retry.backoff, _join(path, "backoff"), problems, _ZERO, positive=False)
    max_path = _join(path, "max_backoff")
    _check_duration(retry.max_backoff, max_path, problems, _ZERO, positive=False)
    _check_multiplier(retry.multiplier, _join(path, "multiplier"), problems)
    both = isinstance(retry.backoff, timedelta) and isinstance(retry.max_backoff, timedelta)
    if both and retry.max_backoff < retry.backoff:
        message = f"must be at least backoff ({format_duration(retry.backoff)})"
        problems.add(max_path, f"{message}, got {format_duration(retry.max_backoff)}")


def _check_multiplier(value: object, path: str, problems: _Problems) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.add(path, f"must be a number, not {_type_name(value)}")
    elif not (math.isfinite(value) and 1 <= value <= 1000):
        problems.add(path, f"must be between 1 and 1000, got {value}")


def _check_concurrency(value: object, path: str, problems: _Problems) -> None:
    if _is(value, Concurrency, "a Concurrency", path, problems):
        _check_int(value.max_active_runs, _join(path, "max_active_runs"), problems, 1, 1000)
        _check_enum(value.overlap, _join(path, "overlap"), problems, Overlap)


def _check_preconditions(value: object, path: str, problems: _Problems) -> None:
    if _is(value, tuple, "a list", path, problems):
        for index, check in enumerate(value):
            _check_precondition(check, _join(path, index), problems)


# --- triggers and preconditions ---------------------------------------------------


def _check_triggers(value: object, path: str, problems: _Problems, task_name: object) -> None:
    if _is(value, tuple, "a list", path, problems):
        for index, trigger in enumerate(value):
            _check_trigger(trigger, _join(path, index), problems, task_name)


def _check_trigger(trigger: object, path: str, problems: _Problems, task_name: object) -> None:
    match trigger:
        case Cron():
            _check_cron(trigger.expression, _join(path, "cron"), problems)
            _check_timezone(trigger.timezone, _join(path, "timezone"), problems)
        case Interval():
            every_path = _join(path, "interval")
            _check_duration(trigger.every, every_path, problems, _SECOND, positive=True)
            if trigger.anchor is not None:
                _check_aware(trigger.anchor, _join(path, "anchor"), problems)
        case At():
            _check_aware(trigger.at, _join(path, "at"), problems)
        case After():
            _check_after(trigger.tasks, _join(path, "after"), problems, task_name)
        case _:
            problems.add(path, f"must be a Cron, Interval, At or After, not {_type_name(trigger)}")


def _check_cron(expression: object, path: str, problems: _Problems) -> None:
    if not _check_non_empty(expression, path, problems):
        return
    if expression.strip().lower() in _CRON_ALIASES:
        return
    fields = expression.split()
    if len(fields) not in (5, 6):
        problems.add(path, f"must have 5 or 6 fields, got {len(fields)}")
        return
    for field in fields:
        if not _CRON_FIELD.fullmatch(field):
            problems.add(path, f"{_show(field)} is not a cron field")
            return


def _check_timezone(name: object, path: str, problems: _Problems) -> None:
    if not _is(name, str, "a time zone name", path, problems):
        return
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        problems.add(path, f"unknown time zone {_show(name)}")


def _check_after(tasks: object, path: str, problems: _Problems, task_name: object) -> None:
    if not _is(tasks, tuple, "a list of task names", path, problems):
        return
    if not tasks:
        problems.add(path, "must name at least one task")
    seen: set[str] = set()
    for index, upstream in enumerate(tasks):
        upstream_path = _join(path, index)
        if not _check_name(upstream, upstream_path, problems):
            continue
        if upstream == task_name:
            problems.add(upstream_path, "a task cannot come after itself")
        elif upstream in seen:
            problems.add(upstream_path, f"{upstream!r} is listed twice")
        seen.add(upstream)


def _check_precondition(check: object, path: str, problems: _Problems) -> None:
    match check:
        case CommandCheck():
            _check_command(check.argv, _join(path, "command"), problems)
        case FileCheck():
            _check_non_empty(check.path, _join(path, "file"), problems)
            if check.min_age is not None:
                min_age_path = _join(path, "min_age")
                _check_duration(check.min_age, min_age_path, problems, _ZERO, positive=False)
        case HttpCheck():
            _check_url(check.url, _join(path, "http"), problems)
        case TcpCheck():
            _check_tcp(check, _join(path, "tcp"), problems)
        case _:
            kinds = "a CommandCheck, FileCheck, HttpCheck or TcpCheck"
            problems.add(path, f"must be {kinds}, not {_type_name(check)}")
            return
    _check_duration(check.timeout, _join(path, "timeout"), problems, _ZERO, positive=True)


def _check_url(url: object, path: str, problems: _Problems) -> None:
    if not _check_non_empty(url, path, problems):
        return
    try:
        parts = urlsplit(url)
        is_http = parts.scheme in ("http", "https") and bool(parts.netloc)
    except ValueError:  # e.g. an unclosed [ in an IPv6 host
        is_http = False
    if not is_http:
        problems.add(path, f"{_show(url)} is not an http:// or https:// URL")


def _check_tcp(check: TcpCheck, path: str, problems: _Problems) -> None:
    if _is(check.host, str, "a host name", path, problems) and not check.host:
        problems.add(path, "the host must not be empty")
    if _is(check.port, int, "a port number", path, problems) and not 1 <= check.port <= 65535:
        problems.add(path, f"the port must be between 1 and 65535, got {check.port}")


# --- strings: NUL bytes and sizes ---------------------------------------------------

#: Attribute names whose YAML field name differs.
_YAML_NAMES = {
    Cron: {"expression": "cron"},
    Interval: {"every": "interval"},
    After: {"tasks": "after"},
    CommandCheck: {"argv": "command"},
    FileCheck: {"path": "file"},
    HttpCheck: {"url": "http"},
    TcpCheck: {"host": "tcp"},
}


def _strings(value: object, path: str) -> Iterator[tuple[str, str]]:
    """Every string in ``value`` (keys too), with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(key, _join(path, str(key)))
            yield from _strings(item, _join(path, str(key)))
    elif isinstance(value, tuple):
        for index, item in enumerate(value):
            yield from _strings(item, _join(path, index))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _YAML_NAMES.get(type(value), {})
        for field in dataclasses.fields(value):
            yield from _strings(
                getattr(value, field.name), _join(path, names.get(field.name, field.name))
            )


def _check_strings(spec: TaskSpec, path: str, problems: _Problems) -> None:
    """No NUL bytes (PostgreSQL text cannot hold them), valid UTF-8, bounded sizes."""
    total, oversized = 0, False
    for string_path, text in _strings(spec, path):
        size = len(text.encode("utf-8", "surrogatepass"))
        total += size
        if "\x00" in text:
            problems.add(string_path, "must not contain NUL bytes")
        if size > MAX_STRING_BYTES:
            problems.add(string_path, f"{size} bytes, at most {MAX_STRING_BYTES}")
            oversized = True
        if not _is_utf8(text):
            problems.add(string_path, "is not valid Unicode text")
    if total > MAX_SPEC_BYTES and not oversized:
        problems.add(path, f"the spec's strings total {total} bytes, at most {MAX_SPEC_BYTES}")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_FIELD_CHECKS: tuple[tuple[str, _Check], ...] = (
    ("name", _check_name),
    ("description", _check_str),
    ("command", _check_command),
    ("shell", _check_bool),
    ("env", _map_check(_env_key)),
    ("params", _map_check(_non_empty_key)),
    ("workdir", _check_str),
    ("timeout", _duration_check(positive=True, optional=True)),
    ("retry", _check_retry),
    ("preconditions", _check_preconditions),
    ("poke_interval", _duration_check(_SECOND, positive=True, optional=False)),
    ("precondition_timeout", _duration_check(positive=True, optional=True)),
    ("on_timeout", _enum(OnTimeout)),
    ("selector", _check_selector),
    ("concurrency", _check_concurrency),
    ("catchup", _enum(Catchup)),
    ("max_catchup", _int_range(1, 100_000)),
    ("starting_deadline", _duration_check(positive=True, optional=True)),
)


# --- parsing the YAML shape -------------------------------------------------------

_Parser = Callable[[Any, str, _Problems], Any]


def task_from_dict(data: Mapping[str, Any], path: str = "") -> TaskSpec:
    """Build and validate a spec from its YAML shape (DESIGN §5).

    Args:
        data: One task as loaded from YAML or JSON (``task_to_dict`` output too).
        path: Prefix of every problem's path, e.g. ``"tasks[1] (billing.export)"``.

    Returns:
        The valid spec.

    Raises:
        InvalidArgument: With one ``FieldProblem`` per problem: unknown fields,
            wrong types and everything ``validate_task`` finds.
    """
    problems = _Problems()
    spec = _parse_task(data, path, problems)
    validate_parsed_task(spec, path, problems.items)
    return spec


def _parse_task(data: object, path: str, problems: _Problems) -> TaskSpec:
    fields = _parse_fields(data, path, problems, _TASK_FIELDS)
    for required in ("name", "command"):
        if isinstance(data, Mapping) and data.get(required) is None:
            problems.add(_join(path, required), "is required")
        fields.setdefault(required, None)
    return TaskSpec(**fields)


def _parse_fields(
    data: object, path: str, problems: _Problems, parsers: Mapping[str, _Parser]
) -> dict[str, Any]:
    """Parse the known fields of a mapping; a null field is left to its default."""
    if not isinstance(data, Mapping):
        problems.add(path, f"must be a mapping, not {_type_name(data)}")
        return {}
    fields = {}
    for key, value in data.items():
        if key not in parsers:
            _unknown_field(key, path, problems, parsers)
        elif value is not None:
            fields[key] = parsers[key](value, _join(path, key), problems)
    return fields


def _unknown_field(key: object, path: str, problems: _Problems, known: Iterable[str]) -> None:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    problems.add(_join(path, str(key)), f"unknown field{hint}")


def _parse_str(value: object, path: str, problems: _Problems) -> str | None:
    return value if _is(value, str, "a string", path, problems) else None


def _parse_bool(value: object, path: str, problems: _Problems) -> bool | None:
    return value if _is(value, bool, "a boolean", path, problems) else None


def _parse_int(value: object, path: str, problems: _Problems) -> int | None:
    return value if _is(value, int, "an integer", path, problems) else None


def _parse_number(value: object, path: str, problems: _Problems) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.add(path, f"must be a number, not {_type_name(value)}")
        return None
    return float(value)


def _parse_scalar(value: object, path: str, problems: _Problems) -> str | None:
    """A map value: a string, or a number or boolean written as one."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    problems.add(path, f"must be a string, number or boolean, not {_type_name(value)}")
    return None


def _parse_map(value: object, path: str, problems: _Problems) -> dict[str, str | None] | None:
    if not isinstance(value, Mapping):
        problems.add(path, f"must be a mapping, not {_type_name(value)}")
        return None
    parsed = {}
    for key, item in value.items():
        if isinstance(key, str):
            parsed[key] = _parse_scalar(item, _join(path, key), problems)
        else:
            problems.add(_join(path, str(key)), f"keys must be strings, not {_type_name(key)}")
    return parsed


def _parse_duration(value: object, path: str, problems: _Problems) -> timedelta | None:
    try:
        return parse_duration(value, path)  # type: ignore[arg-type]  # checked inside
    except InvalidArgument as error:
        problems.extend(error.problems)
        return None


def _parse_datetime(value: object, path: str, problems: _Problems) -> datetime | None:
    """A datetime, or ISO 8601 text; whether it has an offset is validation's concern."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    problems.add(path, f"must be an ISO 8601 date-time with a UTC offset, got {_show(value)}")
    return None


def _parse_host_port(value: object, path: str, problems: _Problems) -> tuple[str, int] | None:
    """``"host:port"``, or ``"[::1]:port"`` for an IPv6 address."""
    if not _is(value, str, "a 'host:port' string", path, problems):
        return None
    host, _, port = value.rpartition(":")
    if not re.fullmatch(r"[0-9]{1,5}", port):
        problems.add(path, f"must be 'host:port', got {_show(value)}")
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _enum_parser(kind: type[_E]) -> _Parser:
    def parse(value: object, path: str, problems: _Problems) -> _E | None:
        if isinstance(value, str) and value.lower() in kind._value2member_map_:
            return kind(value.lower())
        choices = ", ".join(member.value for member in kind)
        problems.add(path, f"must be one of {choices}, got {_show(value)}")
        return None

    return parse


def _list_of(parser: _Parser) -> _Parser:
    def parse(value: object, path: str, problems: _Problems) -> tuple[Any, ...] | None:
        if not isinstance(value, list | tuple):
            problems.add(path, f"must be a list, not {_type_name(value)}")
            return None
        return tuple(parser(item, _join(path, index), problems) for index, item in enumerate(value))

    return parse


def _object_parser(kind: Callable[..., _T], parsers: Mapping[str, _Parser]) -> _Parser:
    return lambda value, path, problems: kind(**_parse_fields(value, path, problems, parsers))


#: A kind of trigger or precondition: the parsers of its fields, and its builder.
_Kind = tuple[Mapping[str, _Parser], Callable[[dict[str, Any]], Any]]


def _one_of(kinds: Mapping[str, _Kind]) -> _Parser:
    """A parser of mappings that have exactly one of the ``kinds`` as a key."""

    def parse(value: object, path: str, problems: _Problems) -> Any:
        if not isinstance(value, Mapping):
            problems.add(path, f"must be a mapping, not {_type_name(value)}")
            return None
        present = [kind for kind in kinds if kind in value]
        if len(present) != 1:
            _no_single_kind(value, path, problems, kinds, present)
            return None
        kind = present[0]
        parsers, build = kinds[kind]
        fields = _parse_fields(value, path, problems, parsers)
        if value[kind] is None:
            fields[kind] = parsers[kind](None, _join(path, kind), problems)
        return build(fields)

    return parse


def _no_single_kind(
    value: Mapping[Any, Any],
    path: str,
    problems: _Problems,
    kinds: Mapping[str, _Kind],
    present: list[str],
) -> None:
    if present:
        problems.add(path, f"has {' and '.join(present)}; give exactly one")
    else:
        known = {name for parsers, _ in kinds.values() for name in parsers}
        for key in sorted(value.keys() - known, key=str):
            _unknown_field(key, path, problems, known)
        problems.add(path, f"must have one of {', '.join(kinds)}")


def _some(fields: Mapping[str, Any], *names: str) -> dict[str, Any]:
    """The given fields that are present (absent ones keep their defaults)."""
    return {name: fields[name] for name in names if name in fields}


def _tcp_check(fields: dict[str, Any]) -> TcpCheck:
    address: Any = fields["tcp"] or (None, None)
    host, port = address
    return TcpCheck(host=host, port=port, **_some(fields, "timeout"))


_TRIGGER_KINDS: dict[str, _Kind] = {
    "cron": (
        {"cron": _parse_str, "timezone": _parse_str},
        lambda f: Cron(expression=f["cron"], **_some(f, "timezone")),
    ),
    "interval": (
        {"interval": _parse_duration, "anchor": _parse_datetime},
        lambda f: Interval(every=f["interval"], **_some(f, "anchor")),
    ),
    "at": ({"at": _parse_datetime}, lambda f: At(at=f["at"])),
    "after": ({"after": _list_of(_parse_str)}, lambda f: After(tasks=f["after"])),
}

_PRECONDITION_KINDS: dict[str, _Kind] = {
    "command": (
        {"command": _list_of(_parse_str), "timeout": _parse_duration},
        lambda f: CommandCheck(argv=f["command"], **_some(f, "timeout")),
    ),
    "file": (
        {"file": _parse_str, "min_age": _parse_duration, "timeout": _parse_duration},
        lambda f: FileCheck(path=f["file"], **_some(f, "min_age", "timeout")),
    ),
    "http": (
        {"http": _parse_str, "timeout": _parse_duration},
        lambda f: HttpCheck(url=f["http"], **_some(f, "timeout")),
    ),
    "tcp": ({"tcp": _parse_host_port, "timeout": _parse_duration}, _tcp_check),
}

_TASK_FIELDS: dict[str, _Parser] = {
    "name": _parse_str,
    "description": _parse_str,
    "command": _list_of(_parse_str),
    "shell": _parse_bool,
    "env": _parse_map,
    "params": _parse_map,
    "workdir": _parse_str,
    "timeout": _parse_duration,
    "retry": _object_parser(
        Retry,
        {
            "max_attempts": _parse_int,
            "backoff": _parse_duration,
            "max_backoff": _parse_duration,
            "multiplier": _parse_number,
        },
    ),
    "triggers": _list_of(_one_of(_TRIGGER_KINDS)),
    "preconditions": _list_of(_one_of(_PRECONDITION_KINDS)),
    "poke_interval": _parse_duration,
    "precondition_timeout": _parse_duration,
    "on_timeout": _enum_parser(OnTimeout),
    "selector": _parse_map,
    "concurrency": _object_parser(
        Concurrency, {"max_active_runs": _parse_int, "overlap": _enum_parser(Overlap)}
    ),
    "catchup": _enum_parser(Catchup),
    "max_catchup": _parse_int,
    "starting_deadline": _parse_duration,
}


# --- the canonical form -------------------------------------------------------------


def task_to_dict(spec: TaskSpec) -> dict[str, Any]:
    """The canonical, JSON-serialisable YAML shape of a valid spec.

    Every field is present (defaults and ``None`` too), keys are sorted,
    durations are ``format_duration`` text and instants ISO 8601 in UTC with a
    ``Z``; so two equal specs give equal dicts, and
    ``task_from_dict(task_to_dict(spec)) == spec``.
    """
    shape = {
        "name": spec.name,
        "description": spec.description,
        "command": list(spec.command),
        "shell": spec.shell,
        "env": dict(spec.env),
        "params": dict(spec.params),
        "workdir": spec.workdir,
        "timeout": _duration_text(spec.timeout),
        "retry": _retry_to_dict(spec.retry),
        "triggers": [_trigger_to_dict(trigger) for trigger in spec.triggers],
        "preconditions": [_precondition_to_dict(check) for check in spec.preconditions],
        "poke_interval": format_duration(spec.poke_interval),
        "precondition_timeout": _duration_text(spec.precondition_timeout),
        "on_timeout": OnTimeout(spec.on_timeout).value,
        "selector": dict(spec.selector),
        "concurrency": _concurrency_to_dict(spec.concurrency),
        "catchup": Catchup(spec.catchup).value,
        "max_catchup": spec.max_catchup,
        "starting_deadline": _duration_text(spec.starting_deadline),
    }
    return {key: _sorted(shape[key]) for key in sorted(shape)}


def _sorted(value: Any) -> Any:
    """``value`` with the keys of every mapping in it sorted."""
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def _duration_text(duration: timedelta | None) -> str | None:
    return None if duration is None else format_duration(duration)


def _datetime_text(instant: datetime | None) -> str | None:
    if instant is None:
        return None
    return instant.astimezone(UTC).isoformat().removesuffix("+00:00") + "Z"


def _retry_to_dict(retry: Retry) -> dict[str, Any]:
    return {
        "max_attempts": retry.max_attempts,
        "backoff": format_duration(retry.backoff),
        "max_backoff": format_duration(retry.max_backoff),
        "multiplier": float(retry.multiplier),
    }


def _concurrency_to_dict(concurrency: Concurrency) -> dict[str, Any]:
    overlap = Overlap(concurrency.overlap).value
    return {"max_active_runs": concurrency.max_active_runs, "overlap": overlap}


def _trigger_to_dict(trigger: Trigger) -> dict[str, Any]:
    match trigger:
        case Cron():
            return {"cron": trigger.expression, "timezone": trigger.timezone}
        case Interval():
            every = format_duration(trigger.every)
            return {"interval": every, "anchor": _datetime_text(trigger.anchor)}
        case At():
            return {"at": _datetime_text(trigger.at)}
        case After():
            return {"after": list(trigger.tasks)}
    raise TypeError(f"not a trigger: {trigger!r}")


def _precondition_to_dict(check: Precondition) -> dict[str, Any]:
    timeout = format_duration(check.timeout)
    match check:
        case CommandCheck():
            return {"command": list(check.argv), "timeout": timeout}
        case FileCheck():
            min_age = _duration_text(check.min_age)
            return {"file": check.path, "min_age": min_age, "timeout": timeout}
        case HttpCheck():
            return {"http": check.url, "timeout": timeout}
        case TcpCheck():
            host = f"[{check.host}]" if ":" in check.host else check.host
            return {"tcp": f"{host}:{check.port}", "timeout": timeout}
    raise TypeError(f"not a precondition: {check!r}")


# --- YAML files ---------------------------------------------------------------------


def load_task_documents(text: str, source: str = "<input>") -> list[TaskSpec]:
    """Parse and validate every task of a YAML file, all or nothing.

    The text holds one task, several ``---``-separated documents, a list of
    tasks, or a mapping ``{tasks: [...]}``; these forms may be mixed across
    documents. Problem paths start with the task's position and name, e.g.
    ``tasks[1] (billing.export).triggers[0].cron``.

    Args:
        text: The YAML text.
        source: Where the text comes from, for messages, e.g. a file name.

    Returns:
        The specs, in file order.

    Raises:
        InvalidArgument: On a YAML syntax error (with line and column), on a
            duplicate task name, or with every problem of every task.
    """
    problems = _Problems()
    entries = _task_entries(_load_yaml(text, source), source, problems)
    specs = [
        _parse_entry(data, _entry_path(index, data), problems) for index, data in enumerate(entries)
    ]
    _check_unique_names(entries, problems)
    if not entries and not problems.items:
        problems.add(source, "no tasks found")
    if problems.items:
        raise InvalidArgument(problems.items)
    return [spec for spec in specs if spec is not None]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _load_yaml(text: str, source: str) -> list[Any]:
    try:
        return list(yaml.load_all(text, Loader=_UniqueKeyLoader))  # a safe loader
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise InvalidArgument(f"invalid YAML: {where}{error.problem}", source) from None
    except yaml.YAMLError as error:
        raise InvalidArgument(f"invalid YAML: {error}", source) from None


def _task_entries(documents: list[Any], source: str, problems: _Problems) -> list[Any]:
    """The raw tasks of all documents, in order."""
    entries: list[Any] = []
    for number, document in enumerate(documents, start=1):
        if isinstance(document, Mapping) and "tasks" in document:
            document = _unwrap_tasks(document, problems)
        if isinstance(document, list):
            entries.extend(document)
        elif isinstance(document, Mapping):
            entries.append(document)
        elif document is not None:
            message = "must be a task, a list of tasks, or a mapping with 'tasks'"
            problems.add(source, f"document {number}: {message}, not {_type_name(document)}")
    return entries


def _unwrap_tasks(document: Mapping[Any, Any], problems: _Problems) -> list[Any]:
    """The list of a ``{tasks: [...]}`` document."""
    for key in sorted(document.keys() - {"tasks"}, key=str):
        problems.add(str(key), "unknown field; a document with 'tasks' has nothing else")
    tasks = document["tasks"]
    if isinstance(tasks, list):
        return tasks
    problems.add("tasks", f"must be a list of tasks, not {_type_name(tasks)}")
    return []


def _entry_path(index: int, data: object) -> str:
    name = data.get("name") if isinstance(data, Mapping) else None
    return f"tasks[{index}] ({name})" if isinstance(name, str) else f"tasks[{index}]"


def _parse_entry(data: object, path: str, problems: _Problems) -> TaskSpec | None:
    try:
        return task_from_dict(data, path)  # type: ignore[arg-type]  # checked inside
    except InvalidArgument as error:
        problems.extend(error.problems)
        return None


def _check_unique_names(entries: list[Any], problems: _Problems) -> None:
    first: dict[str, str] = {}
    for index, data in enumerate(entries):
        path = _entry_path(index, data)
        name = data.get("name") if isinstance(data, Mapping) else None
        if isinstance(name, str) and name in first:
            problems.add(_join(path, "name"), f"duplicate task name; first at {first[name]}")
        elif isinstance(name, str):
            first[name] = path
