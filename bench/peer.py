"""peer: Procrastinate (3.10, PsycopgConnector) doing the same work on the same server.

Its own database on the server the Hydra benchmarks use; one worker process
(:mod:`bench.peer_worker`) at concurrency 16 (Hydra's throughput run has 16
slots), whose task runs ``/bin/true`` with an asyncio subprocess.

* **jobs/s** — N jobs deferred in one ``batch_defer_async`` call to an idle
  worker; N over the time from the first ``deferred`` event to the last
  ``succeeded`` event (``procrastinate_events.at``, the database's clock).
* **defer → start** — one job at a time, each deferred 20-50 ms after the
  previous one finished (an idle worker): ``time.time()`` before
  ``defer_async`` to the task's ``time.time()`` right after the spawn.

Procrastinate is optional (``pip install -e '.[bench]'``); without it this
benchmark says so and is skipped.
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import psycopg

from bench.procfs import cpu_seconds
from bench.results import BenchError, Metric, Result, distribution
from bench.stack import Context, Sql
from harness.processes import Process
from harness.wait import wait_for

NAME = "peer"
JOBS_RATE = "jobs/s"
START_P50 = "defer -> start p50"
START_P99 = "defer -> start p99"
INSTALL_HINT = "procrastinate is not installed: pip install -e '.[bench]' to compare with it"


@dataclass(frozen=True, kw_only=True, slots=True)
class Params:
    """How many jobs, how wide, how many latency samples."""

    jobs: int = 2000
    concurrency: int = 16
    latency_samples: int = 200
    timeout_s: float = 300.0


SMOKE = Params(jobs=50, latency_samples=5, timeout_s=60.0)


def available() -> bool:
    """Whether Procrastinate can be imported."""
    return importlib.util.find_spec("procrastinate") is not None


def run(ctx: Context) -> Result:
    """Throughput and defer → start latency of Procrastinate."""
    if not available():
        print(f"peer: {INSTALL_HINT}; skipping the peer comparison", flush=True)
        return Result(name=NAME, skipped=INSTALL_HINT)
    params = SMOKE if ctx.smoke else Params()
    if ctx.runs:
        params = replace(params, jobs=ctx.runs)
    with ctx.database(NAME) as conninfo, ctx.processes(NAME) as procs, Sql(conninfo) as db:
        asyncio.run(_apply_schema(conninfo))
        start_log = procs.log_dir / "starts.tsv"
        start_log.unlink(missing_ok=True)
        worker = procs.start(
            "procrastinate-worker",
            [
                sys.executable,
                "-m",
                "bench.peer_worker",
                "--conninfo",
                conninfo,
                "--concurrency",
                str(params.concurrency),
            ],
            env={"BENCH_PEER_START_LOG": str(start_log)},
        )
        _wait_worker(db, worker)
        cpu_before = cpu_seconds(worker.pid)
        asyncio.run(_defer_batch(conninfo, params.jobs))
        _wait_succeeded(db, worker, params.jobs, params.timeout_s)
        cpu = cpu_seconds(worker.pid) - cpu_before
        stats = _timings(db)
        latencies = asyncio.run(_defer_latencies(conninfo, start_log, worker, params))
    return _result(params, stats, cpu, latencies)


async def _apply_schema(conninfo: str) -> None:
    from bench.peer_worker import build_app

    app = build_app(conninfo, pool_size=2)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


def _wait_worker(db: Sql, worker: Process) -> None:
    def registered() -> bool:
        worker.check_running()
        return bool(db.value("SELECT count(*) FROM procrastinate_workers"))

    wait_for(registered, timeout=60, interval=0.1, message="the procrastinate worker")


async def _defer_batch(conninfo: str, jobs: int) -> None:
    from bench.peer_worker import TASK_NAME, build_app

    app = build_app(conninfo, pool_size=2)
    async with app.open_async():
        await app.configure_task(TASK_NAME).batch_defer_async(*({} for _ in range(jobs)))


def _wait_succeeded(db: Sql, worker: Process, jobs: int, timeout: float) -> None:
    def finished() -> bool:
        worker.check_running()
        done = db.value(
            "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('succeeded', 'failed')"
        )
        return int(done) >= jobs

    wait_for(finished, timeout=timeout, interval=0.1, message=f"{jobs} procrastinate jobs")


def _timings(db: Sql) -> dict[str, Any]:
    row = db.rows(
        "SELECT min(at) FILTER (WHERE type = 'deferred') AS first_deferred, "
        "max(at) FILTER (WHERE type = 'succeeded') AS last_succeeded, "
        "count(*) FILTER (WHERE type = 'succeeded') AS succeeded "
        "FROM procrastinate_events"
    )[0]
    row["elapsed_s"] = (row["last_succeeded"] - row["first_deferred"]).total_seconds()
    return row


async def _defer_latencies(
    conninfo: str, start_log: Path, worker: Process, params: Params
) -> list[float]:
    """Milliseconds from before ``defer_async`` to the job's process start, one at a time."""
    from bench.peer_worker import TASK_NAME, build_app

    app = build_app(conninfo, pool_size=2)
    latencies = []
    async with (
        app.open_async(),
        await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as db,
    ):
        deferrer = app.configure_task(TASK_NAME)
        for key in range(params.latency_samples):
            sent = time.time()
            job_id = await deferrer.defer_async(key=key)
            started = await _wait_start(start_log, key, worker)
            latencies.append((started - sent) * 1000)
            await _wait_done(db, job_id)  # the next one finds an idle worker
            await asyncio.sleep(random.uniform(0.02, 0.05))
    return latencies


async def _wait_done(db: psycopg.AsyncConnection[Any], job_id: int, limit_s: float = 10) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        cursor = await db.execute("SELECT status FROM procrastinate_jobs WHERE id = %s", (job_id,))
        row = await cursor.fetchone()
        if row is not None and row[0] in ("succeeded", "failed"):
            return
        await asyncio.sleep(0.002)
    raise BenchError(f"procrastinate job {job_id} did not finish within {limit_s:g}s")


async def _wait_start(start_log: Path, key: int, worker: Process, limit_s: float = 10) -> float:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        worker.check_running()
        started = await asyncio.to_thread(_find_start, start_log, key)
        if started is not None:
            return started
        await asyncio.sleep(0.002)
    raise BenchError(f"procrastinate job {key} did not start within {limit_s:g}s")


def _find_start(start_log: Path, key: int) -> float | None:
    """The start time the worker logged for `key`, if it has."""
    prefix = f"{key}\t"
    try:
        lines = start_log.read_text().splitlines()
    except FileNotFoundError:
        return None
    return next((float(line.split("\t")[1]) for line in lines if line.startswith(prefix)), None)


def _result(params: Params, stats: dict[str, Any], cpu: float, latencies: list[float]) -> Result:
    rate = stats["succeeded"] / stats["elapsed_s"]
    start = distribution(latencies)
    metrics = [
        Metric(
            name=JOBS_RATE,
            value=rate,
            unit="jobs/s",
            note=f"{params.jobs} jobs, concurrency {params.concurrency}",
        ),
        Metric(
            name="worker CPU s per 1000 jobs",
            value=1000 * cpu / max(stats["succeeded"], 1),
            unit="s",
        ),
        Metric(name=START_P50, value=start["p50"], unit="ms", note="idle worker"),
        Metric(name=START_P99, value=start["p99"], unit="ms"),
    ]
    details = {"params": asdict(params), "cpu_s": cpu, "defer_to_start_ms": start, **stats}
    return Result(name=NAME, metrics=metrics, details=details)
