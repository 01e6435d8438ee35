"""Loads the named SQL blocks of queries.sql once."""

from __future__ import annotations

import functools
from importlib import resources

_NAME_PREFIX = "-- name: "
_SECTION_PREFIX = "-- ---"


@functools.cache
def all_queries() -> dict[str, str]:
    """Every query of queries.sql by name; a block runs to the next name or section line."""
    text = resources.files("hydra.coordinator.store").joinpath("queries.sql").read_text()
    queries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(_NAME_PREFIX):
            name = line.removeprefix(_NAME_PREFIX).strip()
            if name in queries:
                raise RuntimeError(f"queries.sql defines {name!r} twice")
            current = queries[name] = []
        elif line.startswith(_SECTION_PREFIX):
            current = None
        elif current is not None:
            current.append(line)
    return {name: _strip_description(lines) for name, lines in queries.items()}


def _strip_description(lines: list[str]) -> str:
    if not lines or not lines[0].startswith("-- "):
        raise RuntimeError("every query in queries.sql needs a one-line description")
    return "\n".join(lines[1:]).strip()


def query(name: str) -> str:
    """The SQL of one named query."""
    return all_queries()[name]
