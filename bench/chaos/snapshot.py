"""What PostgreSQL recorded about a chaos run's tasks, read once after the run:
tasks and their triggers, runs, attempts."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from hydra.domain import Cron

ACTIVE_STATES = frozenset({"QUEUED", "LEASED", "RUNNING"})
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "SKIPPED"})
#: An upstream in one of these makes its downstream run SKIPPED.
BROKEN_STATES = frozenset({"FAILED", "CANCELLED", "SKIPPED"})


@dataclass(frozen=True, kw_only=True, slots=True)
class AttemptRow:
    """One row of hydra_attempts."""

    run_id: str
    number: int
    state: str
    agent_id: str
    lease_token: int
    started_at: datetime
    finished_at: datetime | None
    exit_code: int | None
    message: str


@dataclass(frozen=True, kw_only=True, slots=True)
class RunRow:
    """One row of hydra_runs, with its attempts (by number)."""

    id: str
    task: str
    occurrence: datetime
    #: When the run was created (a cron run: up to 50 ms before its occurrence).
    created_at: datetime
    state: str
    reason: str
    cause: str
    lease_token: int | None
    attempts_used: int
    max_attempts: int
    outputs: dict[str, Any] | None
    attempts: tuple[AttemptRow, ...]

    @property
    def last_attempt(self) -> AttemptRow | None:
        """The attempt with the highest number."""
        return self.attempts[-1] if self.attempts else None


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """The runs of the chaos run's tasks, and facts about them."""

    #: Task name -> its cron trigger (time-triggered tasks only).
    crons: dict[str, Cron]
    #: Task name -> its runs, by occurrence.
    runs: dict[str, list[RunRow]]
    #: (task name, occurrence, rows) for every pair with more than one run.
    duplicate_pairs: list[tuple[str, datetime, int]]
    #: Lease tokens that more than one attempt carries, in the whole database.
    shared_tokens: list[int]

    def all_runs(self) -> list[RunRow]:
        """Every run of every task."""
        return [run for runs in self.runs.values() for run in runs]

    def all_attempts(self) -> list[AttemptRow]:
        """Every attempt of every run."""
        return [attempt for run in self.all_runs() for attempt in run.attempts]

    def run_at(self, task: str, occurrence: datetime) -> list[RunRow]:
        """The runs of `task` for `occurrence` (one, normally; none, or duplicates)."""
        return [run for run in self.runs.get(task, []) if run.occurrence == occurrence]


def load(conninfo: str, task_names: list[str]) -> Snapshot:
    """Read the runs, attempts and triggers of `task_names`."""
    with psycopg.connect(conninfo, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        tasks = _rows(conn, _TASKS, task_names)
        task_ids = [row["id"] for row in tasks]
        name_of = {row["id"]: row["name"] for row in tasks}
        attempts = _attempts_by_run(_rows(conn, _ATTEMPTS, task_ids))
        runs: dict[str, list[RunRow]] = {row["name"]: [] for row in tasks}
        for row in _rows(conn, _RUNS, task_ids):
            runs[name_of[row["task_id"]]].append(_run(row, name_of, attempts))
        duplicates = _rows(conn, _DUPLICATES, task_ids)
        shared = _rows(conn, _SHARED_TOKENS)
    return Snapshot(
        crons={
            row["name"]: Cron(expression=row["cron"], timezone=row["timezone"] or "UTC")
            for row in tasks
            if row["cron"]
        },
        runs=runs,
        duplicate_pairs=[(name_of[r["task_id"]], r["occurrence"], r["n"]) for r in duplicates],
        shared_tokens=[row["lease_token"] for row in shared],
    )


def _rows(
    conn: psycopg.Connection[dict[str, Any]], query: str, *params: Any
) -> list[dict[str, Any]]:
    return conn.execute(query, params).fetchall()


def _attempts_by_run(rows: list[dict[str, Any]]) -> dict[str, list[AttemptRow]]:
    attempts: dict[str, list[AttemptRow]] = defaultdict(list)
    for row in rows:
        attempts[str(row["run_id"])].append(
            AttemptRow(
                run_id=str(row["run_id"]),
                number=row["number"],
                state=row["state"],
                agent_id=row["agent_id"],
                lease_token=row["lease_token"],
                started_at=row["started_at"],
                finished_at=row["finished_at"],
                exit_code=row["exit_code"],
                message=row["message"],
            )
        )
    return attempts


def _run(
    row: dict[str, Any], name_of: dict[int, str], attempts: dict[str, list[AttemptRow]]
) -> RunRow:
    run_id = str(row["id"])
    return RunRow(
        id=run_id,
        task=name_of[row["task_id"]],
        occurrence=row["occurrence"],
        created_at=row["created_at"],
        state=row["state"],
        reason=row["reason"],
        cause=row["cause"],
        lease_token=row["lease_token"],
        attempts_used=row["attempts_used"],
        max_attempts=row["max_attempts"],
        outputs=row["outputs"],
        attempts=tuple(sorted(attempts.get(run_id, []), key=lambda a: a.number)),
    )


_TASKS = """
SELECT t.id, t.name, g.spec ->> 'cron' AS cron, g.spec ->> 'timezone' AS timezone
FROM hydra_tasks t
LEFT JOIN hydra_triggers g ON g.task_id = t.id AND g.kind = 'cron'
WHERE t.name = ANY(%s) AND t.deleted_at IS NULL
"""
_RUNS = """
SELECT id, task_id, occurrence, created_at, state::text AS state, reason, cause, lease_token,
       attempts_used, max_attempts, outputs
FROM hydra_runs WHERE task_id = ANY(%s) ORDER BY task_id, occurrence
"""
_ATTEMPTS = """
SELECT a.run_id, a.number, a.state::text AS state, a.agent_id, a.lease_token,
       a.started_at, a.finished_at, a.exit_code, a.message
FROM hydra_attempts a JOIN hydra_runs r ON r.id = a.run_id
WHERE r.task_id = ANY(%s)
"""
_DUPLICATES = """
SELECT task_id, occurrence, count(*) AS n FROM hydra_runs
WHERE task_id = ANY(%s) GROUP BY task_id, occurrence HAVING count(*) > 1
"""
_SHARED_TOKENS = """
SELECT lease_token FROM hydra_attempts GROUP BY lease_token HAVING count(*) > 1
"""
