"""Probe: what recording a batch of attempt ends costs, per-run statements
against one set-based statement (issue 15, "One statement per batch").

``python -m bench.probe_statements [--db CONNINFO] [--batch 16] [--repeat 40]``

In a scratch database (created on the server of CONNINFO, an admin conninfo,
or on an embedded server started for the probe, and dropped afterwards), each
repetition leases `batch` runs to a fake agent and starts them, then records
their ends in one transaction, as ``attempts.finish`` did before (``old``: a
lock, then two statements per run and two more per run with output tails) and
as it does now (``new``). The two ways alternate, so a noisy machine weighs on
both alike; the figures are medians over the repetitions, of the wall time of
the transaction (from taking its connection to its commit) and of the Python
side's CPU time (``time.process_time``), with the statements each executed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from harness.postgres import temporary_server
from hydra.coordinator.migrate import migrate
from hydra.coordinator.specs import apply_spec
from hydra.coordinator.store import Database, Transaction, attempts, leases, runs, tasks
from hydra.coordinator.store.queries import query
from hydra.coordinator.store.records import AttemptReport, AttemptStart, NewRun, OutputTail
from hydra.coordinator.store.transaction import open_pool
from hydra.domain import AttemptOutcome, Concurrency, Retry, RunCause, TaskSpec

TTL = timedelta(minutes=5)
NOW = datetime.now(UTC).replace(microsecond=0)

# The statements the old way ran per run, as main had them (677e5c9) before
# finish_attempts replaced them; lock_runs, fail_or_requeue_run and
# notify_output are still in queries.sql.
OLD_FINISH_ATTEMPT = """
UPDATE hydra_attempts
SET state = %(state)s, exit_code = %(exit_code)s, signal = %(signal)s,
    finished_at = %(finished_at)s, message = %(message)s,
    argv = CASE WHEN cardinality(argv) = 0 THEN %(argv)s ELSE argv END
WHERE run_id = %(run_id)s AND lease_token = %(lease_token)s AND state = 'RUNNING'
RETURNING number"""
OLD_SUCCEED_RUN = """
UPDATE hydra_runs
SET state = 'SUCCEEDED', reason = '', outputs = %(outputs)s, finished_at = now(),
    lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
WHERE id = %(run_id)s AND lease_token = %(lease_token)s AND state = 'RUNNING'"""
OLD_APPEND_OUTPUT_TAIL = """
WITH attempt AS (
    SELECT run_id, number FROM hydra_attempts WHERE lease_token = %(lease_token)s
), tail AS (
    SELECT t.stream, t.total, t.data, coalesce((
        SELECT sum(length(o.data)) FROM hydra_attempt_output o, attempt a
        WHERE o.run_id = a.run_id AND o.attempt = a.number AND o.stream = t.stream
    ), 0) AS head
    FROM unnest(%(streams)s::smallint[], %(totals)s::bigint[], %(datas)s::bytea[])
        AS t(stream, total, data)
), pieces AS (
    SELECT stream, 1 AS part, total - length(data) - head AS dropped, ''::bytea AS data
    FROM tail WHERE total - length(data) > head
    UNION ALL
    SELECT stream, 2, 0, substring(data FROM (greatest(head - (total - length(data)), 0) + 1)::int)
    FROM tail WHERE head < total
), stored AS (
    INSERT INTO hydra_attempt_output (run_id, attempt, stream, data, dropped_bytes)
    SELECT a.run_id, a.number, p.stream, p.data, p.dropped
    FROM pieces p, attempt a ORDER BY p.stream, p.part
    RETURNING length(data) AS n
)
UPDATE hydra_attempts SET output_bytes = output_bytes + (SELECT coalesce(sum(n), 0) FROM stored)
WHERE lease_token = %(lease_token)s"""


class _CountingCursor:
    """A transaction's cursor, counting the statements it executes."""

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor
        self.statements = 0

    async def execute(self, statement: str, params: Any = None) -> Any:
        self.statements += 1
        return await self.cursor.execute(statement, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cursor, name)


async def old_finish(tx: Transaction, reports: Sequence[AttemptReport]) -> None:
    """The old way, for the common case (current RUNNING leases, one report per run)."""
    cursor = tx.cursor
    ids = [str(uuid.UUID(report.run_id)) for report in reports]
    await cursor.execute(query("lock_runs"), {"ids": ids})
    locked = {str(row["id"]): row for row in await cursor.fetchall()}
    for report in reports:
        row = locked[report.run_id]
        tails = [tail for tail in report.output_tails if tail.total_bytes > 0]
        if tails:
            await cursor.execute(
                OLD_APPEND_OUTPUT_TAIL,
                {
                    "lease_token": report.lease_token,
                    "streams": [tail.stream for tail in tails],
                    "totals": [tail.total_bytes for tail in tails],
                    "datas": [tail.data for tail in tails],
                },
            )
            await cursor.execute(query("notify_output"), {"run_id": report.run_id})
        end = {
            "run_id": report.run_id,
            "lease_token": report.lease_token,
            "state": report.outcome.attempt_state.value,
            "exit_code": report.exit_code,
            "signal": report.signal,
            "finished_at": report.finished_at,
            "message": report.message,
            "argv": list(report.argv),
        }
        await cursor.execute(OLD_FINISH_ATTEMPT, end)
        if report.outcome is AttemptOutcome.SUCCEEDED:
            outputs = Jsonb(json.loads(report.outputs_json)) if report.outputs_json else None
            await cursor.execute(
                OLD_SUCCEED_RUN,
                {"run_id": row["id"], "lease_token": report.lease_token, "outputs": outputs},
            )
        else:
            attempt = await cursor.fetchone()
            await cursor.execute(
                query("fail_or_requeue_run"),
                {
                    "run_id": row["id"],
                    "lease_token": report.lease_token,
                    "reason": f"attempt {attempt['number']} failed with exit code 1",
                    "backoff_factor": 1.0,
                },
            )
            await cursor.fetchone()


async def new_finish(tx: Transaction, reports: Sequence[AttemptReport]) -> None:
    """The new way: ``attempts.finish`` as it is."""
    verdicts = await attempts.finish(tx, reports)
    assert all(verdict.accepted for verdict in verdicts), verdicts


@dataclass(kw_only=True, slots=True)
class Sample:
    wall: list[float]
    cpu: list[float]
    statements: int = 0


class Probe:
    """A scratch database with one task, whose runs are leased and started on demand."""

    def __init__(self, db: Database, batch: int) -> None:
        self.db = db
        self.batch = batch
        self._minutes = 0

    async def prepare(self) -> None:
        spec = TaskSpec(
            name="probe",
            command=("true",),
            concurrency=Concurrency(max_active_runs=10 * self.batch),
            retry=Retry(max_attempts=100, backoff=timedelta(0)),
        )
        await apply_spec(self.db, spec, dry_run=False, now=NOW)

    async def running(self) -> list[tuple[str, int]]:
        """`batch` runs leased and started: fresh ones, or failed ones queued again."""
        task_id, task = await self.db.run(tasks.task_ref, "probe")
        new_runs = []
        for _ in range(self.batch):
            self._minutes += 1
            new_runs.append(
                NewRun(
                    task_id=task_id,
                    task_version=task.version,
                    spec=task.spec,
                    occurrence=NOW - timedelta(minutes=self._minutes),
                    cause=RunCause.BACKFILL,
                )
            )
        await self.db.run(runs.insert_runs, new_runs)
        claimed = await self.db.run(leases.claim, "probe-agent", {}, self.batch, TTL)
        starts = [
            AttemptStart(run_id=c.run_id, lease_token=c.lease_token, argv=("true",), started_at=NOW)
            for c in claimed
        ]
        await self.db.run(attempts.start, "probe-agent", starts)
        return [(c.run_id, c.lease_token) for c in claimed]

    async def measure(
        self,
        way: Callable[[Transaction, Sequence[AttemptReport]], Awaitable[None]],
        reports: Sequence[AttemptReport],
        sample: Sample,
    ) -> None:
        cpu = time.process_time()
        wall = time.perf_counter()
        async with self.db.transaction() as tx:
            counting = _CountingCursor(tx.cursor)
            tx.cursor = counting  # type: ignore[assignment]
            await way(tx, reports)
            tx.cursor = counting.cursor
        sample.wall.append(time.perf_counter() - wall)
        sample.cpu.append(time.process_time() - cpu)
        sample.statements = counting.statements


def reports_for(leased: Sequence[tuple[str, int]], kind: str) -> list[AttemptReport]:
    """Successes with a stdout tail, or failures (exit code 1) with retries left."""
    tail = (OutputTail(stream=1, total_bytes=6, data=b"done.\n"),)
    return [
        AttemptReport(
            run_id=run_id,
            lease_token=token,
            agent_id="probe-agent",
            outcome=AttemptOutcome.SUCCEEDED if kind == "succeeded" else AttemptOutcome.FAILED,
            argv=("true",),
            started_at=NOW,
            finished_at=NOW,
            exit_code=0 if kind == "succeeded" else 1,
            output_tails=tail if kind == "succeeded" else (),
        )
        for run_id, token in leased
    ]


WAYS = {"old": old_finish, "new": new_finish}
KINDS = ("succeeded", "failed")


async def probe(conninfo: str, batch: int, repeat: int) -> dict[tuple[str, str], Sample]:
    await migrate(conninfo)
    pool = open_pool(conninfo, 2)
    await pool.open()
    samples = {(kind, way): Sample(wall=[], cpu=[]) for kind in KINDS for way in WAYS}
    try:
        probe = Probe(Database(pool), batch)
        await probe.prepare()
        for repetition in range(repeat + 2):  # the first two warm up
            for kind in KINDS:
                order = list(WAYS) if repetition % 2 else list(reversed(WAYS))
                for way in order:
                    reports = reports_for(await probe.running(), kind)
                    sample = Sample(wall=[], cpu=[]) if repetition < 2 else samples[(kind, way)]
                    await probe.measure(WAYS[way], reports, sample)
    finally:
        await pool.close()
    return samples


@contextlib.asynccontextmanager
async def scratch_database(admin_conninfo: str) -> AsyncIterator[str]:
    name = f"hydra_probe_statements_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(admin_conninfo, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(admin_conninfo, dbname=name)
    finally:
        async with await psycopg.AsyncConnection.connect(admin_conninfo, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
            )


async def main_async(admin_conninfo: str, batch: int, repeat: int) -> None:
    async with scratch_database(admin_conninfo) as conninfo:
        samples = await probe(conninfo, batch, repeat)
    print(f"recording a batch of {batch} ends in one transaction, {repeat} interleaved repetitions")
    print(f"{'batch of':<12}{'way':<5}{'statements':>11}{'wall ms':>10}{'CPU ms':>9}")
    for (kind, way), sample in samples.items():
        print(
            f"{kind:<12}{way:<5}{sample.statements:>11}"
            f"{statistics.median(sample.wall) * 1000:>10.2f}"
            f"{statistics.median(sample.cpu) * 1000:>9.2f}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.probe_statements", description=__doc__)
    parser.add_argument("--db", help="an admin conninfo (default: an embedded server)")
    parser.add_argument("--batch", type=int, default=16, help="ends per batch (16)")
    parser.add_argument("--repeat", type=int, default=40, help="repetitions per way (40)")
    args = parser.parse_args(argv)
    with temporary_server(args.db) as admin_conninfo:
        asyncio.run(main_async(admin_conninfo, args.batch, args.repeat))


if __name__ == "__main__":
    main()
