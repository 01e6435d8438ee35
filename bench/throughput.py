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
from typing import Any

from bench import ceiling, peer
from bench.procfs import cpu_seconds
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
    """How many runs, on how many slots, for how long at most."""

    runs: int = 2000
    agents: int = 2
    slots_per_agent: int = 8
    timeout_s: float = 300.0


SMOKE = Params(runs=50, agents=1, slots_per_agent=8, timeout_s=60.0)


def params_for(ctx: Context) -> Params:
    """Default or smoke sizes, with ``--runs`` applied."""
    params = SMOKE if ctx.smoke else Params()
    return replace(params, runs=ctx.runs) if ctx.runs else params


def run(ctx: Context) -> Result:
    """Backfill N runs at once and time them to the last SUCCEEDED."""
    params = params_for(ctx)
    with ctx.database(NAME) as conninfo, ctx.processes(NAME) as procs, Sql(conninfo) as db:
        coordinator = start_coordinator(procs, conninfo, tls=ctx.tls)
        ids = [f"bench-tp-{i}" for i in range(params.agents)]
        agents = [
            start_agent(
                procs,
                coordinator,
                agent_id,
                capacity=params.slots_per_agent,
                extra_args=ctx.agent_flags(),
            )
            for agent_id in ids
        ]
        wait_agents(conninfo, ids, watched=agents)
        watched = [coordinator.process, *agents]
        with Client(coordinator.address, tls=ctx.client_tls, timeout=120) as client:
            day = _yesterday()
            client.apply(task_spec(day))
            cpu_before = [cpu_seconds(child.pid) for child in watched]
            rpc_started = time.monotonic()
            _backfill(client, day, params.runs)
            backfill_s = time.monotonic() - rpc_started
            backfill_returned = datetime.now(UTC)
        _wait_finished(db, watched, params)
        cpu = [cpu_seconds(c.pid) - before for c, before in zip(watched, cpu_before, strict=True)]
        stats = {**_timings(db, backfill_returned), "backfill_rpc_s": backfill_s}
    return _result(ctx, params, stats, cpu)


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


def _result(ctx: Context, params: Params, stats: dict[str, Any], cpu: list[float]) -> Result:
    rate = stats["succeeded"] / stats["elapsed_s"]
    slots = params.agents * params.slots_per_agent
    claim_rate = ctx.earlier_value(ceiling.NAME, ceiling.CLAIM_RATE)
    peer_rate = ctx.earlier_value(peer.NAME, peer.JOBS_RATE)
    per_thousand = 1000 * sum(cpu) / max(stats["succeeded"], 1)
    metrics = [
        Metric(
            name=f"runs/s ({params.runs} runs, {slots} slots)",
            value=rate,
            unit="runs/s",
            target=Target(op=">=", bound=1000),
            note=f"{stats['succeeded']}/{stats['total']} succeeded",
        ),
        Metric(
            name="coordinator CPU while running", value=100 * cpu[0] / stats["elapsed_s"], unit="%"
        ),
        Metric(
            name="agents CPU while running", value=100 * sum(cpu[1:]) / stats["elapsed_s"], unit="%"
        ),
        Metric(name="CPU s per 1000 runs (coord+agents)", value=per_thousand, unit="s"),
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
            name="Backfill RPC round trip",
            value=stats["backfill_rpc_s"],
            unit="s",
            note="creates the runs, then returns them all",
        ),
        Metric(
            name="runs/s once the Backfill RPC returned",
            value=stats["rate_after_backfill"],
            unit="runs/s",
            note=f"{stats['finished_after_backfill']} runs finished after it",
        ),
        Metric(
            name="runs/s as fraction of PG claim tx/s",
            value=ratio(rate, claim_rate),
            unit="x",
            note="" if claim_rate else "run with ceiling",
        ),
        Metric(
            name="runs/s vs Procrastinate jobs/s",
            value=ratio(rate, peer_rate),
            unit="x",
            target=Target(op=">=", bound=2, text=">= 2x"),
            note="" if peer_rate else "run with peer",
        ),
    ]
    details = {"params": asdict(params), "cpu_s": cpu, **stats}
    return Result(name=NAME, metrics=metrics, details=details)
