"""throughput: how many runs of ``/bin/true`` per second one coordinator completes.

A task with a per-second cron restricted to yesterday's date (``* * * D M *``,
so it never fires live during the benchmark) is backfilled over the first N
seconds of yesterday: one ``Backfill`` RPC creates all N runs in one
transaction. One coordinator and 1-2 agents with 8-16 slots in total run them.
The rate is N over the time from the first run's ``created_at`` to the last
run's ``finished_at`` (the coordinator's ``now()`` when it recorded SUCCEEDED),
both read from the database. CPU seconds of the coordinator and the agents
over the same stretch come from /proc. The Backfill RPC's own round trip, and
the rate of the runs that finished after it returned, are shown apart: the
coordinator serves that RPC while it dispatches.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import ceiling, peer
from bench.procfs import cpu_seconds, parent_pid, tree_cpu_seconds
from bench.results import BenchError, Metric, Result, Target, ratio
from bench.stack import Context, Sql, start_coordinator
from harness.hydra import start_agent, wait_agents
from harness.processes import Process
from harness.wait import wait_for
from hydra.client import Client, Concurrency, Cron, Task

NAME = "throughput"
TASK = "bench.throughput"
#: Most occurrences one Backfill RPC takes (hydra.coordinator.manual_runs.MAX_BACKFILL).
BACKFILL_CHUNK = 10_000


@dataclass(frozen=True, kw_only=True, slots=True)
class Params:
    """How many runs, on which agents (count x slots each), for how long at most."""

    runs: int = 2000
    #: Each shape is measured in turn, on a database of its own: (agents, slots per agent).
    shapes: tuple[tuple[int, int], ...] = ((2, 8), (1, 16))
    timeout_s: float = 300.0


SMOKE = Params(runs=50, shapes=((1, 8),), timeout_s=60.0)


def params_for(ctx: Context) -> Params:
    """Default or smoke sizes, with ``--runs`` applied."""
    params = SMOKE if ctx.smoke else Params()
    return replace(params, runs=ctx.runs) if ctx.runs else params


def run(ctx: Context) -> Result:
    """Backfill N runs at once and time them to the last SUCCEEDED, for each shape."""
    params = params_for(ctx)
    metrics: list[Metric] = []
    details: dict[str, Any] = {"params": asdict(params)}
    for agents, slots in params.shapes:
        stats, cpu = _measure(ctx, params, agents, slots)
        metrics += _metrics(ctx, params, agents, slots, stats, cpu)
        details[f"{agents}x{slots}"] = {"cpu_s": cpu, **stats}
    return Result(name=NAME, metrics=metrics, details=details)


def _measure(
    ctx: Context, params: Params, agents: int, slots: int
) -> tuple[dict[str, Any], dict[str, float | None]]:
    """One shape: its timings, and CPU seconds of the coordinator, the agents and
    PostgreSQL (None when the server is not on this machine)."""
    name = f"{NAME}-{agents}x{slots}"
    with ctx.database(name) as conninfo, ctx.processes(name) as procs, Sql(conninfo) as db:
        coordinator = start_coordinator(procs, conninfo, tls=ctx.tls)
        ids = [f"bench-tp-{i}" for i in range(agents)]
        started = [
            start_agent(procs, coordinator, agent_id, capacity=slots, extra_args=ctx.agent_flags())
            for agent_id in ids
        ]
        wait_agents(conninfo, ids, watched=started)
        watched = [coordinator.process, *started]
        server = _postmaster(db)
        with Client(coordinator.address, tls=ctx.client_tls, timeout=120) as client:
            day = _yesterday()
            client.apply(task_spec(day))
            commits_before = _commits(db)
            cpu_before = [cpu_seconds(child.pid) for child in watched]
            server_before = tree_cpu_seconds(server) if server else 0.0
            rpc_started = time.monotonic()
            _backfill(client, day, params.runs)
            backfill_s = time.monotonic() - rpc_started
            backfill_returned = datetime.now(UTC)
        _wait_finished(db, watched, params)
        used = [cpu_seconds(c.pid) - before for c, before in zip(watched, cpu_before, strict=True)]
        server_s = tree_cpu_seconds(server) - server_before if server else None
        commits = _commits(db) - commits_before
        stats = {
            **_timings(db, backfill_returned),
            "backfill_rpc_s": backfill_s,
            "commits": commits,
        }
    cpu = {"coordinator": used[0], "agents": sum(used[1:]), "postgres": server_s}
    return stats, cpu


def _commits(db: Sql) -> int:
    """Transactions committed in the benchmark's database so far (the statistics
    collector's figure: it lags by up to a second, so it is read after a pause)."""
    time.sleep(1.0)
    db.execute("SELECT pg_stat_clear_snapshot()")
    return int(
        db.value("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
    )


def _postmaster(db: Sql) -> int | None:
    """The pid of the server's postmaster, if it runs on this machine."""
    backend = int(db.value("SELECT pg_backend_pid()"))
    try:
        postmaster = parent_pid(backend)
        comm = Path(f"/proc/{postmaster}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return postmaster if comm in ("postgres", "postmaster") else None


def task_spec(day: datetime) -> Task:
    """``/bin/true`` every second of one calendar day (UTC), up to 1000 runs at once."""
    return Task(
        name=TASK,
        command=("/bin/true",),
        triggers=(Cron(expression=f"* * * {day.day} {day.month} *"),),
        concurrency=Concurrency(max_active_runs=1000),
    )


def _yesterday() -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=1)


def _backfill(client: Client, day: datetime, runs: int) -> None:
    if runs > 86_400:
        raise BenchError("at most 86,400 runs: one per second of one day")
    for first in range(0, runs, BACKFILL_CHUNK):
        last = min(first + BACKFILL_CHUNK, runs) - 1
        client.backfill(TASK, day + timedelta(seconds=first), day + timedelta(seconds=last))


def _wait_finished(db: Sql, watched: list[Process], params: Params) -> None:
    def finished() -> bool:
        for child in watched:
            child.check_running()
        done = db.value(
            "SELECT count(*) FROM hydra_runs WHERE state IN ('SUCCEEDED', 'FAILED', 'SKIPPED')"
        )
        return int(done) >= params.runs

    wait_for(
        finished, timeout=params.timeout_s, interval=0.1, message=f"{params.runs} runs to finish"
    )


def _timings(db: Sql, backfill_returned: datetime) -> dict[str, Any]:
    row = db.rows(
        "SELECT min(created_at) AS first_created, max(finished_at) AS last_finished, "
        "count(*) FILTER (WHERE state = 'SUCCEEDED') AS succeeded, count(*) AS total, "
        "count(*) FILTER (WHERE finished_at > %s) AS finished_after_backfill "
        "FROM hydra_runs",
        backfill_returned,
    )[0]
    row["elapsed_s"] = (row["last_finished"] - row["first_created"]).total_seconds()
    # Where a slot's time goes, per run (ms): the process as the agent saw it,
    # then until the coordinator's transaction recording its end began.
    stages = db.rows(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM "
        "a.finished_at - a.started_at)) * 1000 AS process_ms, "
        "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM "
        "r.finished_at - a.finished_at)) * 1000 AS report_ms "
        "FROM hydra_runs r JOIN hydra_attempts a ON a.run_id = r.id AND a.state = 'SUCCEEDED'"
    )[0]
    row.update(stages)
    after = (row["last_finished"] - backfill_returned).total_seconds()
    row["rate_after_backfill"] = row["finished_after_backfill"] / after if after > 0 else None
    return row


def _metrics(
    ctx: Context,
    params: Params,
    agents: int,
    slots_each: int,
    stats: dict[str, Any],
    cpu: dict[str, float | None],
) -> list[Metric]:
    rate = stats["succeeded"] / stats["elapsed_s"]
    slots = agents * slots_each
    claim_rate = ctx.earlier_value(ceiling.NAME, ceiling.CLAIM_RATE)
    peer_rate = ctx.earlier_value(peer.NAME, peer.JOBS_RATE)
    per_run = 1000 / max(stats["succeeded"], 1)
    hydra_s = (cpu["coordinator"] or 0.0) + (cpu["agents"] or 0.0)
    server_s = cpu["postgres"]
    shape = f"{agents}x{slots_each}"
    metrics = [
        Metric(
            name=f"[{shape}] runs/s ({params.runs} runs, {agents} agent(s) x {slots_each} slots)",
            value=rate,
            unit="runs/s",
            target=Target(op=">=", bound=1000),
            note=f"{stats['succeeded']}/{stats['total']} succeeded",
        ),
        Metric(
            name=f"[{shape}] runs/s vs Procrastinate jobs/s",
            value=ratio(rate, peer_rate),
            unit="x",
            target=Target(op=">=", bound=2, text=">= 2x"),
            note="" if peer_rate else "run with peer",
        ),
        Metric(
            name=f"[{shape}] CPU s per 1000 runs (coordinator+agents+PostgreSQL)",
            value=None if server_s is None else (hydra_s + server_s) * per_run,
            unit="s",
            note="" if server_s is not None else "PostgreSQL not on this machine",
        ),
        Metric(
            name="  coordinator CPU s per 1000 runs", value=cpu["coordinator"] * per_run, unit="s"
        ),
        Metric(name="  agents CPU s per 1000 runs", value=cpu["agents"] * per_run, unit="s"),
        Metric(
            name="  PostgreSQL CPU s per 1000 runs",
            value=None if server_s is None else server_s * per_run,
            unit="s",
        ),
        Metric(
            name="  coordinator CPU while running",
            value=100 * cpu["coordinator"] / stats["elapsed_s"],
            unit="%",
        ),
        Metric(
            name="  agents CPU while running",
            value=100 * cpu["agents"] / stats["elapsed_s"],
            unit="%",
        ),
        Metric(
            name="  transactions committed per run",
            value=stats["commits"] / max(stats["succeeded"], 1),
            note="every connection's, from pg_stat_database",
        ),
        Metric(
            name="  a slot's cycle (slots / runs/s)",
            value=1000 * slots / rate,
            unit="ms",
            note="offer to the next offer on the same slot",
        ),
        Metric(
            name="  process start -> end seen by the agent p50",
            value=stats["process_ms"],
            unit="ms",
        ),
        Metric(
            name="  end seen by the agent -> recorded p50",
            value=stats["report_ms"],
            unit="ms",
            note="until the recording transaction began",
        ),
        Metric(
            name="  Backfill RPC round trip",
            value=stats["backfill_rpc_s"],
            unit="s",
            note="creates the runs, then returns them all",
        ),
        Metric(
            name="  runs/s once the Backfill RPC returned",
            value=stats["rate_after_backfill"],
            unit="runs/s",
            note=f"{stats['finished_after_backfill']} runs finished after it",
        ),
        Metric(
            name="  runs/s as fraction of PG claim tx/s",
            value=ratio(rate, claim_rate),
            unit="x",
            note="" if claim_rate else "run with ceiling",
        ),
    ]
    return metrics
