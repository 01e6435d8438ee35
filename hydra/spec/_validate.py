"""Validation of typed specs: every field, triggers and preconditions.

It tolerates wrong types, so it can check what the parsers built with ``None``
in place of values they could not convert (see ``validate_parsed_task``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hydra.domain import (
    MAX_CHECK_TIMEOUT,
    After,
    At,
    Catchup,
    CommandCheck,
    Concurrency,
    Cron,
    FileCheck,
    HttpCheck,
    Interval,
    NotifyEvent,
    OnTimeout,
    Overlap,
    Retention,
    Retry,
    SecretRef,
    TaskSpec,
    TcpCheck,
    Webhook,
    secret_name_problem,
)
from hydra.errors import FieldProblem, InvalidArgument
from hydra.spec._durations import _ZERO, format_duration
from hydra.spec._problems import _inside, _join, _Problems, _show, _type_name
from hydra.spec._strings import _check_strings

NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,127}"
#: Longest duration; well inside what google.protobuf.Duration can carry.
MAX_DURATION = timedelta(days=36500)

_NAME = re.compile(NAME_PATTERN)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CRON_NAMES = "SUN|MON|TUE|WED|THU|FRI|SAT|JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC"
_CRON_FIELD = re.compile(rf"(?:[0-9*,/?#LW-]|{_CRON_NAMES})+", re.IGNORECASE)
_CRON_ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
_SECOND = timedelta(seconds=1)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")
#: Headers a delivery sets itself.
_RESERVED_HEADERS = frozenset(
    {"hydra-event-id", "hydra-signature", "content-length", "host", "transfer-encoding"}
)

_T = TypeVar("_T")
#: Checks one field of a typed spec: (value, path, problems).
_Check = Callable[[Any, str, "_Problems"], object]


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
    _check_late_needs_deadline(spec, _join(path, "notify"), problems)
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


def _check_env(value: object, path: str, problems: _Problems) -> None:
    """A map of variable names to strings or secret references."""
    if not isinstance(value, Mapping):
        problems.add(path, f"must be a mapping of strings, not {_type_name(value)}")
        return
    plain = {key: item for key, item in value.items() if not isinstance(item, SecretRef)}
    _check_map(plain, path, problems, _env_key)
    for key, item in value.items():
        if isinstance(item, SecretRef):
            _env_key(str(key), path, problems)
            _check_secret_name(item.name, _join(_join(path, str(key)), "secret"), problems)


def _check_secret_name(name: object, path: str, problems: _Problems) -> None:
    if _is(name, str, "a string", path, problems) and (problem := secret_name_problem(name)):
        problems.add(path, problem)


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


#: Most runs a task may keep regardless of age.
MAX_KEEP_LAST = 1_000_000


def _check_retention(value: object, path: str, problems: _Problems) -> None:
    if not _is(value, Retention, "a Retention", path, problems):
        return
    for name in ("max_age", "output_max_age"):
        check = _duration_check(positive=True, optional=True)
        check(getattr(value, name), _join(path, name), problems)
    if value.keep_last is not None:
        _check_int(value.keep_last, _join(path, "keep_last"), problems, 0, MAX_KEEP_LAST)


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
    timeout_path = _join(path, "timeout")
    _check_duration(check.timeout, timeout_path, problems, _ZERO, positive=True)
    if isinstance(check.timeout, timedelta) and MAX_CHECK_TIMEOUT < check.timeout <= MAX_DURATION:
        problems.add(
            timeout_path,
            f"must be at most {format_duration(MAX_CHECK_TIMEOUT)}, "
            f"got {format_duration(check.timeout)}",
        )


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


# --- notifications ----------------------------------------------------------------


def validate_webhooks(webhooks: object, path: str = "notify") -> None:
    """Check a list of webhooks (a task's ``notify``, or the cluster's defaults).

    Raises:
        InvalidArgument: With one ``FieldProblem`` per problem found.
    """
    problems = _Problems()
    _check_notify(webhooks, path, problems)
    if problems.items:
        raise InvalidArgument(problems.items)


def _check_notify(value: object, path: str, problems: _Problems) -> None:
    if _is(value, tuple, "a list", path, problems):
        for index, webhook in enumerate(value):
            _check_webhook(webhook, _join(path, index), problems)


def _check_webhook(webhook: object, path: str, problems: _Problems) -> None:
    if not _is(webhook, Webhook, "a Webhook", path, problems):
        return
    _check_events(webhook.on, _join(path, "on"), problems)
    url_path = _join(path, "webhook")
    if isinstance(webhook.url, SecretRef):
        _check_secret_name(webhook.url.name, _join(url_path, "secret"), problems)
    else:
        _check_url(webhook.url, url_path, problems)
    _check_headers(webhook.headers, _join(path, "headers"), problems)
    _check_str(webhook.body, _join(path, "body"), problems)
    if webhook.sign is not None and _is(
        webhook.sign, SecretRef, "a secret reference", _join(path, "sign"), problems
    ):
        _check_secret_name(webhook.sign.name, _join(path, "sign.secret"), problems)


def _check_events(value: object, path: str, problems: _Problems) -> None:
    if not _is(value, tuple, "a list of events", path, problems):
        return
    if not value:
        problems.add(path, "must name at least one event")
    seen: set[object] = set()
    for index, event in enumerate(value):
        _check_enum(event, _join(path, index), problems, NotifyEvent)
        if event in seen:
            problems.add(_join(path, index), f"{_show(event)} is listed twice")
        seen.add(event)


def _check_headers(value: object, path: str, problems: _Problems) -> None:
    if not isinstance(value, Mapping):
        problems.add(path, f"must be a mapping of strings, not {_type_name(value)}")
        return
    for name, item in value.items():
        item_path = _join(path, str(name))
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            problems.add(item_path, "is not a header name")
        elif name.lower() in _RESERVED_HEADERS:
            problems.add(item_path, "is set by Hydra itself")
        if isinstance(item, SecretRef):
            _check_secret_name(item.name, _join(item_path, "secret"), problems)
        elif _is(item, str, "a string or {secret: NAME}", item_path, problems) and (
            "\r" in item or "\n" in item
        ):
            problems.add(item_path, "must not contain line breaks")


def _check_late_needs_deadline(spec: TaskSpec, path: str, problems: _Problems) -> None:
    if spec.deadline is not None or not isinstance(spec.notify, tuple):
        return
    for index, webhook in enumerate(spec.notify):
        events = webhook.on if isinstance(webhook, Webhook) else ()
        if isinstance(events, tuple) and NotifyEvent.LATE in events:
            at = _join(_join(path, index), "on")
            problems.add(at, "'late' needs the task's deadline: set deadline")


_FIELD_CHECKS: tuple[tuple[str, _Check], ...] = (
    ("name", _check_name),
    ("description", _check_str),
    ("command", _check_command),
    ("shell", _check_bool),
    ("env", _check_env),
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
    ("notify", _check_notify),
    ("deadline", _duration_check(_SECOND, positive=True, optional=True)),
    ("retention", _check_retention),
)
