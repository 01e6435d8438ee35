"""queries.sql: every query is named, described, used, and every use exists."""

from __future__ import annotations

import re
from pathlib import Path

import hydra.coordinator.store
from hydra.coordinator.store.queries import all_queries

SOURCES = Path(hydra.coordinator.store.__file__).parent
#: Named-query uses: tx.one("name", ...), tx.all(...), tx.execute(...), self.execute(...),
#: and query("name") on a connection of the store's own (the probe's).
_USE = re.compile(r'\b(?:(?:tx|self)\.(?:one|all|execute)|query)\(\s*"(\w+)"')


def _uses() -> set[str]:
    return {m for path in SOURCES.glob("*.py") for m in _USE.findall(path.read_text())}


def test_only_the_store_runs_named_queries() -> None:
    coordinator = SOURCES.parent
    outside = [
        str(path.relative_to(coordinator))
        for path in coordinator.rglob("*.py")
        if SOURCES not in path.parents and _USE.search(path.read_text())
    ]
    assert outside == []


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
