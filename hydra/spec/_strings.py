"""The strings of a typed spec: no NUL bytes, valid Unicode, bounded sizes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

from hydra.domain import (
    After,
    CommandCheck,
    Cron,
    FileCheck,
    HttpCheck,
    Interval,
    TaskSpec,
    TcpCheck,
    Webhook,
)
from hydra.spec._problems import _join, _Problems

#: Longest single string of a spec (a command element, an env value...), in UTF-8 bytes.
MAX_STRING_BYTES = 128 * 1024
#: Longest total of all strings of a spec, in UTF-8 bytes.
MAX_SPEC_BYTES = 1024 * 1024


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
    Webhook: {"url": "webhook"},
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
