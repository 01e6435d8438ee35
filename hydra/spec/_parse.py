"""Parsing the YAML shape of a task (docs/interfaces.md) into a ``TaskSpec``.

The parsers only convert shapes and types: a value that cannot be converted is
a parse problem, and the spec gets ``None`` in its place.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

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
    NotifyEvent,
    OnTimeout,
    Overlap,
    Retention,
    Retry,
    SecretRef,
    TaskSpec,
    TcpCheck,
    Webhook,
)
from hydra.errors import InvalidArgument
from hydra.spec._durations import parse_duration
from hydra.spec._problems import _join, _Problems, _show, _type_name
from hydra.spec._validate import _is, validate_parsed_task, validate_webhooks

_T = TypeVar("_T")
_E = TypeVar("_E", bound=enum.Enum)


# --- parsing the YAML shape -------------------------------------------------------

_Parser = Callable[[Any, str, _Problems], Any]


def task_from_dict(data: Mapping[str, Any], path: str = "") -> TaskSpec:
    """Build and validate a spec from its YAML shape (docs/interfaces.md).

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


def webhooks_from_list(data: object, path: str = "notify") -> tuple[Webhook, ...]:
    """Build and validate a list of webhooks (the cluster's ``--notify-defaults``).

    Raises:
        InvalidArgument: With one ``FieldProblem`` per problem.
    """
    problems = _Problems()
    webhooks = _list_of(_parse_webhook)(data, path, problems)
    if problems.items:
        raise InvalidArgument(problems.items)
    validate_webhooks(webhooks, path)
    return tuple(webhooks)


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


def _parse_env(
    value: object, path: str, problems: _Problems
) -> dict[str, str | SecretRef | None] | None:
    """Like a map, but a value may also be a secret reference: ``{secret: NAME}``."""
    if not isinstance(value, Mapping):
        problems.add(path, f"must be a mapping, not {_type_name(value)}")
        return None
    parsed: dict[str, str | SecretRef | None] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            problems.add(_join(path, str(key)), f"keys must be strings, not {_type_name(key)}")
        elif isinstance(item, Mapping):
            parsed[key] = _parse_secret_ref(item, _join(path, key), problems)
        else:
            parsed[key] = _parse_scalar(item, _join(path, key), problems)
    return parsed


def _parse_secret_ref(value: Mapping[Any, Any], path: str, problems: _Problems) -> SecretRef | None:
    if set(value) != {"secret"}:
        problems.add(path, "a mapping here must be a secret reference: {secret: NAME}")
        return None
    name = value["secret"]
    if not isinstance(name, str):  # at the variable: it gets None in the spec
        problems.add(path, f"the secret's name must be a string, not {_type_name(name)}")
        return None
    return SecretRef(name=name)


def _parse_text_or_secret(value: object, path: str, problems: _Problems) -> str | SecretRef | None:
    """A string, or a secret reference ``{secret: NAME}`` (a webhook's URL)."""
    if isinstance(value, Mapping):
        return _parse_secret_ref(value, path, problems)
    return _parse_str(value, path, problems)


def _parse_secret(value: object, path: str, problems: _Problems) -> SecretRef | None:
    if isinstance(value, Mapping):
        return _parse_secret_ref(value, path, problems)
    problems.add(path, f"must be a secret reference {{secret: NAME}}, not {_type_name(value)}")
    return None


def _webhook(fields: dict[str, Any]) -> Webhook:
    url: Any = fields.get("webhook")  # None when missing or unusable: a problem already
    return Webhook(on=fields.get("on") or (), url=url, **_some(fields, "headers", "body", "sign"))


def _parse_webhook(value: object, path: str, problems: _Problems) -> Webhook | None:
    if isinstance(value, Mapping) and True in value:  # YAML 1.1 reads a bare `on:` as true
        value = {"on" if key is True else key: item for key, item in value.items()}
    fields = _parse_fields(value, path, problems, _WEBHOOK_FIELDS)
    if isinstance(value, Mapping):
        for required in ("on", "webhook"):
            if value.get(required) is None:
                problems.add(_join(path, required), "is required")
    return _webhook(fields) if isinstance(value, Mapping) else None


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

_WEBHOOK_FIELDS: dict[str, _Parser] = {
    "on": _list_of(_enum_parser(NotifyEvent)),
    "webhook": _parse_text_or_secret,
    "headers": _parse_env,
    "body": _parse_str,
    "sign": _parse_secret,
}

_TASK_FIELDS: dict[str, _Parser] = {
    "name": _parse_str,
    "description": _parse_str,
    "command": _list_of(_parse_str),
    "shell": _parse_bool,
    "env": _parse_env,
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
    "notify": _list_of(_parse_webhook),
    "deadline": _parse_duration,
    "retention": _object_parser(
        Retention,
        {"max_age": _parse_duration, "keep_last": _parse_int, "output_max_age": _parse_duration},
    ),
}
