"""History never slows the hot path: runs list's shapes and paging, and the plans
of the hot queries over a big history (each reads what it returns, not history)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from hydra.coordinator.specs import apply_spec
from hydra.coordinator.store import Database, runs
from hydra.coordinator.store.queries import query
from hydra.domain import RunState, TaskSpec

NOW = datetime.now(UTC).replace(microsecond=0)
#: Old runs of each task, one a minute (nine in ten succeeded).
HISTORY = 10_000

LOAD = """
INSERT INTO hydra_runs (task_id, task_version, occurrence, cause, state, finished_at)
SELECT t.id, 1, %(base)s + make_interval(mins => i), 'cron',
       (CASE WHEN i %% 10 = 0 THEN 'FAILED' ELSE 'SUCCEEDED' END)::hydra_run_state,
       %(base)s + make_interval(mins => i)
FROM hydra_tasks t, generate_series(1, %(count)s) AS i
"""


@pytest.fixture
async def loaded(store: Database, db_conninfo: str) -> Iterator[psycopg.Connection[Any]]:
    for name in ("a", "b"):
        spec = TaskSpec(name=name, command=("true",))
        await apply_spec(store, spec, dry_run=False, now=NOW)
    conn = psycopg.connect(db_conninfo, autocommit=True)
    base = NOW - timedelta(days=60)
    conn.execute(LOAD, {"base": base, "count": HISTORY})
    conn.execute("VACUUM ANALYZE hydra_runs")
    yield conn
    conn.close()


async def _page(store: Database, **filters: Any) -> list[Any]:
    """Every run the filters select, page by page (7 a page)."""
    found: list[Any] = []
    after = None
    while True:
        page = await store.run(
            runs.list_runs,
            **{"task": "", "states": [], **filters},
            after=after,
            limit=7,
        )
        found += page
        if len(page) < 7:
            return found
        after = (page[-1].occurrence, page[-1].id)


async def test_every_shape_pages_through_a_range_newest_first(
    store: Database, loaded: psycopg.Connection[Any]
) -> None:
    start = NOW - timedelta(days=60) + timedelta(minutes=100)
    end = start + timedelta(minutes=25)
    window = {"occurrence_from": start, "occurrence_to": end}
    every = await _page(store, **window)
    assert len(every) == 50  # 25 minutes of two tasks
    assert [(r.occurrence, r.id) for r in every] == sorted(
        ((r.occurrence, r.id) for r in every), reverse=True
    )
    assert {r.occurrence for r in every} == {start + timedelta(minutes=i) for i in range(25)}
    of_a = await _page(store, task="a", **window)
    assert [r.id for r in of_a] == [r.id for r in every if r.task == "a"]
    failed = await _page(store, states=[RunState.FAILED], **window)
    assert [r.id for r in failed] == [r.id for r in every if r.state is RunState.FAILED]
    both = await _page(store, states=[RunState.FAILED, RunState.SUCCEEDED], **window)
    assert [r.id for r in both] == [r.id for r in every]
    failed_a = await _page(store, task="a", states=[RunState.FAILED], **window)
    assert [r.id for r in failed_a] == [r.id for r in failed if r.task == "a"]


def _plan(conn: psycopg.Connection[Any], name: str, **params: Any) -> dict[str, Any]:
    conn.execute("BEGIN")
    try:
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query(name), params).fetchone()
    finally:
        conn.execute("ROLLBACK")
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return dict(plan[0]["Plan"])


def _rows_read(node: dict[str, Any]) -> int:
    """Rows every scan of hydra_runs produced or filtered away, over all its loops."""
    own = 0
    if node.get("Relation Name") == "hydra_runs":
        assert "Seq Scan" not in node["Node Type"], node
        loops = node.get("Actual Loops", 1)
        own = (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * loops
    return int(own) + sum(_rows_read(child) for child in node.get("Plans", []))


PAGE = {
    "task": "",
    "task_prefix": "%",
    "states": [],
    "after_occurrence": None,
    "after_id": None,
    "limit": 51,
    "occurrence_from": None,
    "occurrence_to": None,
}
AHEAD = timedelta(milliseconds=50)


@pytest.mark.parametrize(
    ("name", "params", "most"),
    [
        ("list_runs", PAGE, 200),
        ("list_runs", {**PAGE, "after_occurrence": NOW - timedelta(days=50)}, 200),
        ("list_runs_of_task", {**PAGE, "task": "a"}, 200),
        ("list_runs_in_states", {**PAGE, "states": ["FAILED", "QUEUED"]}, 200),
        (
            "claim_runs",
            {"ahead": AHEAD, "labels": "{}", "limit": 8, "agent_id": "x", "ttl": AHEAD},
            10,
        ),
        ("queued_runs_due", {"ahead": AHEAD}, 10),
        ("next_queued_due", {"ahead": AHEAD}, 10),
        ("next_lease_expiry", {}, 10),
        ("list_agents", {"include_disconnected": True}, 10),
        ("leases_of_agent", {"agent_id": "x"}, 10),
    ],
)
def test_hot_queries_read_what_they_return_not_history(
    loaded: psycopg.Connection[Any], name: str, params: dict[str, Any], most: int
) -> None:
    assert _rows_read(_plan(loaded, name, **params)) <= most
