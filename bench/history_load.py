"""The history benchmark's parts: old runs loaded by bulk SQL, and the workload
measured on each database.

**Loading.** Old runs are written as the coordinator writes finished ones, by
SQL in chunks (one statement each: runs, their attempt, a chunk of output), as
the scale benchmark registers its tasks: 5 million runs take minutes, where
running them would take weeks. They belong to the workload's own tasks and to
``tasks`` others, one a minute per task, 100 to 35-odd days old, nine in ten
succeeded, one in ten failed: all of them past a 30-day retention.

**The workload.** Backfilled runs of ``/bin/true`` through one coordinator and
one agent (throughput), one manual run at a time (Trigger → start, as the
latency benchmark measures it), a first page of ``runs list`` (no filter, by
task, by state) and ``cluster status`` (each call's round trip).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import latency, throughput
from bench.results import BenchError, distribution
from bench.stack import Sql
from harness.processes import Process
from harness.wait import wait_for
from hydra.client import Client, Concurrency, Cron, RunState, Task

TP_TASK = "bench.history.tp"
MANUAL_TASK = "bench.manual"  # the latency benchmark's Trigger task
FAIL_TASK = "bench.history.fail"
#: The page size of the runs list calls; the fresh database gets this many failed
#: runs, so that its FAILED page is as full as the loaded one's.
PAGE = 50
OLD_PREFIX = "bench.history.old-"

LOAD_CHUNK = """
WITH runs AS (
    INSERT INTO hydra_runs (task_id, task_version, occurrence, cause, state, created_at,
                            not_before, started_at, finished_at, updated_at, attempts_used,
                            lease_owner, lease_token)
    SELECT s.task_id, 1, s.occurrence, 'cron', s.state, s.occurrence, s.occurrence,
           s.occurrence, s.occurrence + interval '1 second', s.occurrence + interval '1 second',
           1, 'bench-old', nextval('hydra_lease_token_seq')
    FROM (SELECT (%(task_ids)s::bigint[])[1 + i %% %(tasks)s] AS task_id,
                 %(base)s::timestamptz + (i / %(tasks)s) * interval '1 minute' AS occurrence,
                 (CASE WHEN i %% 10 = 0 THEN 'FAILED' ELSE 'SUCCEEDED' END)::hydra_run_state
                     AS state
          FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i) s
    RETURNING id, state, started_at, finished_at, lease_token
), attempts AS (
    INSERT INTO hydra_attempts (run_id, number, state, agent_id, lease_token, argv,
                                exit_code, output_bytes, started_at, finished_at)
    SELECT id, 1, (CASE WHEN state = 'FAILED' THEN 'FAILED' ELSE 'SUCCEEDED' END)
                      ::hydra_attempt_state,
           'bench-old', lease_token, '{/bin/true}', CASE WHEN state = 'FAILED' THEN 1 ELSE 0 END,
           64, started_at, finished_at
    FROM runs
    RETURNING run_id, finished_at
)
INSERT INTO hydra_attempt_output (run_id, attempt, stream, data, created_at)
SELECT run_id, 1, 1, convert_to(repeat('x', 63) || E'\\n', 'UTF8'), finished_at FROM attempts
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class Workload:
    """How much of each part of the workload."""

    throughput_runs: int = 1000
    trigger_samples: int = 100
    list_calls: int = 30
    slots: int = 16


def apply_tasks(client: Client, old_tasks: int) -> None:
    """The workload's tasks and the others that only have history."""
    day = _yesterday()
    specs = [
        Task(
            name=TP_TASK,
            command=("/bin/true",),
            triggers=(Cron(expression=f"* * * {day.day} {day.month} *"),),
            concurrency=Concurrency(max_active_runs=1000),
        ),
        Task(
            name=MANUAL_TASK, command=("/bin/true",), concurrency=Concurrency(max_active_runs=1000)
        ),
    ]
    specs.append(Task(name=FAIL_TASK, command=("/bin/false",)))
    specs += [Task(name=f"{OLD_PREFIX}{i}", command=("/bin/true",)) for i in range(old_tasks)]
    client.apply(specs)


def fail_runs(client: Client, db: Sql, watched: list[Process], count: int = PAGE) -> None:
    """`count` failed runs, so that a first page of FAILED runs is full on a fresh
    database too (it compares the same page, not an empty one with a full one)."""
    for _ in range(count):
        client.trigger(FAIL_TASK)
    query = (
        "SELECT count(*) FROM hydra_runs WHERE state = 'FAILED' AND task_id = "
        "(SELECT id FROM hydra_tasks WHERE name = %s AND deleted_at IS NULL)"
    )

    def failed() -> bool:
        for child in watched:
            child.check_running()
        return int(db.value(query, FAIL_TASK)) >= count

    wait_for(failed, timeout=120, interval=0.1, message=f"{count} failed runs")


def load_history(db: Sql, total: int, chunk: int, label: str = "history") -> float:
    """Write `total` old runs with attempts and output; seconds taken (VACUUM ANALYZE included)."""
    started = time.monotonic()
    task_ids = [row["id"] for row in db.rows("SELECT id FROM hydra_tasks ORDER BY id")]
    per_task = -(-total // len(task_ids))
    base = datetime.now(UTC) - timedelta(days=100)
    if base + timedelta(minutes=per_task) > datetime.now(UTC) - timedelta(days=31):
        raise BenchError(f"{per_task} runs a minute per task would not all be past 30 days")
    for first in range(0, total, chunk):
        last = min(first + chunk, total) - 1
        params = {"task_ids": task_ids, "tasks": len(task_ids), "base": base}
        db.execute_params(LOAD_CHUNK, {**params, "first": first, "last": last})
        print(f"{label}: {last + 1:,} old runs loaded", flush=True)
    db.execute("VACUUM (ANALYZE) hydra_runs, hydra_attempts, hydra_attempt_output")
    return time.monotonic() - started


def measure(
    client: Client, db: Sql, watched: list[Process], workload: Workload, window: int
) -> dict[str, Any]:
    """Every figure of the workload; `window` picks fresh occurrences for the backfill."""
    return {
        "throughput_per_s": backfill_rate(client, db, watched, workload.throughput_runs, window),
        "trigger_ms": trigger_latencies(client, db, watched, workload.trigger_samples),
        **calls(client, workload.list_calls),
    }


def backfill_rate(client: Client, db: Sql, watched: list[Process], runs: int, window: int) -> float:
    """Runs per second, from the first created to the last finished, of `runs` backfilled runs."""
    first = _yesterday() + timedelta(seconds=window * runs)
    client.backfill(TP_TASK, first, first + timedelta(seconds=runs - 1))
    last = first + timedelta(seconds=runs - 1)
    query = (
        "SELECT count(*) FILTER (WHERE state IN ('SUCCEEDED', 'FAILED')) AS done, "
        "min(created_at) AS created, max(finished_at) AS finished FROM hydra_runs "
        "WHERE task_id = (SELECT id FROM hydra_tasks WHERE name = %s AND deleted_at IS NULL) "
        "AND occurrence BETWEEN %s AND %s"
    )

    def finished() -> dict[str, Any] | None:
        for child in watched:
            child.check_running()
        row = db.rows(query, TP_TASK, first, last)[0]
        return row if int(row["done"]) >= runs else None

    row = wait_for(finished, timeout=600, interval=0.1, message=f"{runs} backfilled runs")
    return runs / (row["finished"] - row["created"]).total_seconds()


def trigger_latencies(
    client: Client, db: Sql, watched: list[Process], samples: int
) -> dict[str, float]:
    """Trigger → start of one manual run at a time (the latency benchmark's way)."""
    return distribution(trigger_samples(client, db, watched, samples))


def trigger_samples(client: Client, db: Sql, watched: list[Process], samples: int) -> list[float]:
    """Each Trigger → start, in ms."""
    params = latency.Params(trigger_samples=samples)
    return latency._trigger_latencies(client, db, watched, params)["total"]


def calls(client: Client, repeat: int) -> dict[str, dict[str, float]]:
    """Round trips of runs list (a first page of PAGE runs) and cluster status, in ms."""
    timed = {
        "runs_list_ms": lambda: client.list_runs(limit=PAGE),
        "runs_list_task_ms": lambda: client.list_runs(task=TP_TASK, limit=PAGE),
        "runs_list_failed_ms": lambda: client.list_runs(states=[RunState.FAILED], limit=PAGE),
        "cluster_status_ms": client.cluster_status,
    }
    return {name: _timed(call, repeat) for name, call in timed.items()}


def _timed(call: Any, repeat: int) -> dict[str, float]:
    call()  # warm
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return distribution(samples)


def _yesterday() -> datetime:
    return throughput._yesterday()
