"""queries.sql: every query is named, described, used, and every use exists."""

from __future__ import annotations

import re
from pathlib import Path

import hydra.coordinator
from hydra.coordinator.queries import all_queries

SOURCES = Path(hydra.coordinator.__file__).parent
#: Named-query uses: self.one(cur, "name", ...), self.all(...), self.run_query(...), query("name").
_USE = re.compile(r'(?:\b(?:one|all|run_query)\(\s*cur,\s*|\bquery\()\s*"(\w+)"')


def _uses() -> set[str]:
    return {m for path in SOURCES.glob("*.py") for m in _USE.findall(path.read_text())}


def test_every_query_is_used() -> None:
    unused = sorted(set(all_queries()) - _uses())
    assert unused == []


def test_every_use_names_a_query() -> None:
    missing = sorted(_uses() - set(all_queries()))
    assert missing == []


def test_every_query_has_a_one_line_description() -> None:
    text = (SOURCES / "queries.sql").read_text()
    blocks = re.findall(r"^-- name: (\w+)\n(-- .+)\n", text, re.M)
    assert {name for name, _ in blocks} == set(all_queries())


def test_parameters_use_psycopg_named_style() -> None:
    for name, sql in all_queries().items():
        assert not re.search(r"\$\d|(?<![%])%s", sql), name
