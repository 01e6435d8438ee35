"""history: does a big history slow the hot path, and how long does pruning it take?

One database, three phases (:mod:`bench.history_load` has the parts):

1. **fresh** — one coordinator and one agent (16 slots); the workload:
   throughput of backfilled ``/bin/true`` runs, Trigger → start, a first page
   of ``runs list`` (no filter, by task, by state FAILED) and ``cluster status``.
2. **loaded** — 5 million old runs, each with an attempt and a chunk of output,
   are written by bulk SQL (all past a 30-day retention), the tables vacuumed
   and analysed, and the same workload runs again: each figure is shown with
   its ratio to the fresh one (target <= 1.5x).
3. **pruning** — the coordinator is replaced by one started with
   ``HYDRA_RETENTION=max_age=30d``; its first pruning pass starts at once and
   deletes the 5 million runs (keeping each task's latest success) while the
   workload's throughput and Trigger → start are measured again. The pass's
   time comes from the ``hydra_pruner`` row it records.

The machine's other work weighs on every phase: the figures are one run's.
``HYDRA_BENCH_HISTORY_RUNS`` sets another number of old runs.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from bench.history_load import (
    Workload,
    apply_tasks,
    backfill_rate,
    fail_runs,
    load_history,
    measure,
    trigger_samples,
)
from bench.results import Metric, Result, Target, distribution, ratio
from bench.stack import Context, Sql, start_coordinator
from harness.hydra import start_agent, wait_agents
from harness.processes import Process, Processes
from harness.wait import wait_for
from hydra.client import Client

NAME = "history"
#: Overrides the number of old runs (default 5,000,000; smoke 3,000).
SIZE_ENV = "HYDRA_BENCH_HISTORY_RUNS"
RETENTION = "max_age=30d"
WITHIN = Target(op="<=", bound=1.5, text="<= 1.5x")


@dataclass(frozen=True, kw_only=True, slots=True)
class Params:
    """Sizes of the history and of the workload."""

    old_runs: int = 5_000_000
    old_tasks: int = 98
    load_chunk: int = 250_000
    workload: Workload = field(default_factory=Workload)
    #: Failed runs made before the fresh figures (a full first page of FAILED).
    failed_runs: int = 50
    prune_timeout_s: float = 3600.0


SMOKE = Params(
    old_runs=3000,
    old_tasks=3,
    load_chunk=1000,
    workload=Workload(throughput_runs=20, trigger_samples=5, list_calls=3),
    failed_runs=3,
    prune_timeout_s=120.0,
)


def run(ctx: Context) -> Result:
    """Fresh, loaded, then pruning, on one database."""
    params = SMOKE if ctx.smoke else Params()
    if SIZE_ENV in os.environ:  # a smaller (or bigger) history than 5 million runs
        params = replace(params, old_runs=int(os.environ[SIZE_ENV]))
    with ctx.database(NAME) as conninfo, Sql(conninfo) as db:
        with ctx.processes(f"{NAME}-measure") as procs:
            client, watched = _cluster(procs, conninfo, "bench-history")
            with client:
                apply_tasks(client, params.old_tasks)
                fail_runs(client, db, watched, params.failed_runs)
                fresh = measure(client, db, watched, params.workload, window=0)
                load_s = load_history(db, params.old_runs, params.load_chunk)
                loaded = measure(client, db, watched, params.workload, window=1)
        pruning = _prune(ctx, conninfo, db, params)
        pruning["load_s"] = load_s
    return _result(params, fresh, loaded, pruning)


def _cluster(procs: Processes, conninfo: str, agent_id: str) -> tuple[Client, list[Process]]:
    coordinator = start_coordinator(procs, conninfo)
    agent = start_agent(procs, coordinator, agent_id, capacity=16)
    wait_agents(conninfo, [agent_id], watched=[agent])
    return Client(coordinator.address, timeout=120), [coordinator.process, agent]


def _prune(ctx: Context, conninfo: str, db: Sql, params: Params) -> dict[str, Any]:
    """A coordinator with a 30-day retention prunes at start; the workload runs meanwhile."""
    started = datetime.now(UTC)
    before = int(db.value("SELECT count(*) FROM hydra_runs"))
    os.environ["HYDRA_RETENTION"] = RETENTION
    try:
        with ctx.processes(f"{NAME}-prune") as procs:
            client, watched = _cluster(procs, conninfo, "bench-history-2")
            with client:
                during = _during_pass(client, db, watched, params, started)
    finally:
        del os.environ["HYDRA_RETENTION"]
    row = db.rows(
        "SELECT last_pass_started_at, last_pass_finished_at, last_pass_runs FROM hydra_pruner"
    )[0]
    pass_s = (row["last_pass_finished_at"] - row["last_pass_started_at"]).total_seconds()
    after = int(db.value("SELECT count(*) FROM hydra_runs"))
    return {
        **during,
        "pass_s": pass_s,
        "pruned": row["last_pass_runs"],
        "before": before,
        "after": after,
    }


def _during_pass(
    client: Client, db: Sql, watched: list[Process], params: Params, started: datetime
) -> dict[str, Any]:
    """Throughput once, then Trigger → start samples until the pass has ended: in
    rounds (the worst round's p50 and p99 show a bad stretch) and all together
    (the pass's p50 and p99, comparable with the fresh database's)."""
    workload = params.workload
    throughput = backfill_rate(client, db, watched, workload.throughput_runs, window=2)
    rounds: list[list[float]] = []
    deadline = time.monotonic() + params.prune_timeout_s
    while not _pass_ended(db, started) and time.monotonic() < deadline:
        rounds.append(trigger_samples(client, db, watched, max(1, workload.trigger_samples // 10)))
    wait_for(lambda: _pass_ended(db, started), timeout=params.prune_timeout_s, message="the pass")
    p50s = [distribution(r)["p50"] for r in rounds]
    p99s = [distribution(r)["p99"] for r in rounds]
    pooled = distribution([sample for r in rounds for sample in r])
    return {
        "throughput_per_s": throughput,
        "trigger_p50_ms": max(p50s) if p50s else None,
        "trigger_p50_median_ms": sorted(p50s)[len(p50s) // 2] if p50s else None,
        "trigger_p99_ms": max(p99s) if p99s else None,
        "trigger_rounds": len(rounds),
        "trigger_ms": pooled if rounds else None,
    }


def _pass_ended(db: Sql, started: datetime) -> bool:
    finished = db.value("SELECT last_pass_finished_at FROM hydra_pruner")
    runs = db.value("SELECT last_pass_runs FROM hydra_pruner")
    return finished is not None and finished > started and int(runs) > 0


def _result(
    params: Params, fresh: dict[str, Any], loaded: dict[str, Any], pruning: dict[str, Any]
) -> Result:
    size = f"{params.old_runs:,} old runs"
    metrics: list[Metric] = []
    for key, label, unit, higher_is_better in _FIGURES:
        fresh_value, loaded_value = _figure(fresh, key), _figure(loaded, key)
        metrics.append(Metric(name=f"{label} fresh", value=fresh_value, unit=unit))
        metrics.append(Metric(name=f"{label} @ {size}", value=loaded_value, unit=unit))
        worse = (
            ratio(fresh_value, loaded_value)
            if higher_is_better
            else ratio(loaded_value, fresh_value)
        )
        metrics.append(Metric(name=f"{label} slowdown", value=worse, unit="x", target=WITHIN))
    metrics += _pruning_metrics(fresh, pruning)
    details = {"params": asdict(params), "fresh": fresh, "loaded": loaded, "pruning": pruning}
    return Result(name=NAME, metrics=metrics, details=details)


#: (key, label, unit, higher is better) of each workload figure.
_FIGURES = (
    ("throughput_per_s", "throughput", "/s", True),
    ("trigger_ms.p50", "Trigger -> start p50", "ms", False),
    ("trigger_ms.p99", "Trigger -> start p99", "ms", False),
    ("runs_list_ms.p50", "runs list page p50", "ms", False),
    ("runs_list_task_ms.p50", "runs list --task page p50", "ms", False),
    ("runs_list_failed_ms.p50", "runs list --state FAILED page p50", "ms", False),
    ("cluster_status_ms.p50", "cluster status p50", "ms", False),
)


def _figure(figures: dict[str, Any], key: str) -> float | None:
    value: Any = figures
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return float(value) if value is not None else None


def _pruning_metrics(fresh: dict[str, Any], pruning: dict[str, Any]) -> list[Metric]:
    pass_s = pruning["pass_s"]
    rate = pruning["pruned"] / pass_s if pass_s > 0 else None
    fresh_p50 = _figure(fresh, "trigger_ms.p50")
    return [
        Metric(
            name="pruning pass",
            value=pass_s,
            unit="s",
            note=f"{pruning['pruned']:,} runs deleted, {pruning['after']:,} left",
        ),
        Metric(name="runs pruned per second", value=rate, unit="/s"),
        Metric(
            name="throughput during the pass",
            value=pruning["throughput_per_s"],
            unit="/s",
        ),
        Metric(
            name="Trigger -> start p50 during the pass (worst round)",
            value=pruning["trigger_p50_ms"],
            unit="ms",
            note=f"{pruning['trigger_rounds']} rounds",
        ),
        Metric(
            name="Trigger -> start p50 during the pass / fresh",
            value=ratio(pruning["trigger_p50_median_ms"], fresh_p50),
            unit="x",
            target=WITHIN,
            note="median round",
        ),
        Metric(
            name="Trigger -> start p99 during the pass (worst round)",
            value=pruning["trigger_p99_ms"],
            unit="ms",
        ),
        Metric(
            name="Trigger -> start p99 during the pass, all rounds / fresh",
            value=ratio(_figure(pruning, "trigger_ms.p99"), _figure(fresh, "trigger_ms.p99")),
            unit="x",
            target=WITHIN,
            note=f"{_figure(pruning, 'trigger_ms.n') or 0:.0f} samples",
        ),
    ]
