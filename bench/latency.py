"""latency: how soon a process starts after it should.

(a) **cron → start** — a handful of tasks with ``* * * * * *`` (every second,
    ``max_active_runs`` 1000) run ``/bin/true`` for a while; for every run,
    ``hydra_attempts.started_at`` (taken by the agent right after the spawn)
    minus ``hydra_runs.occurrence``. Split into occurrence → ``created_at``
    (the trigger loop's wake-up) and ``created_at`` → start (NOTIFY, claim,
    offer, spawn).
(b) **Trigger → start** — one manual run at a time on an idle cluster (each
    is triggered 20-50 ms after the previous one finished): the wall clock
    before the ``Trigger`` RPC to ``started_at``.

One coordinator, one agent with 16 slots. Both clocks are this machine's.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import ceiling, peer
from bench.results import BenchError, Metric, Result, Target, distribution, ratio
from bench.stack import Context, Sql, start_coordinator
from harness.hydra import start_agent, wait_agents
from harness.processes import Process
from harness.wait import wait_for
from hydra.client import Client, Concurrency, Cron, Task

NAME = "latency"
CRON_P50 = "cron -> start p50"
CRON_P99 = "cron -> start p99"
TRIGGER_P50 = "Trigger -> start p50"
TRIGGER_P99 = "Trigger -> start p99"


@dataclass(frozen=True, kw_only=True, slots=True)
class Params:
    """How many cron tasks for how long; how many Trigger samples."""

    cron_tasks: int = 5
    cron_seconds: int = 45
    warmup_s: int = 2
    trigger_samples: int = 200
    slots: int = 16


SMOKE = Params(cron_tasks=5, cron_seconds=2, warmup_s=1, trigger_samples=10)


def run(ctx: Context) -> Result:
    """Both latencies on one cluster: cron first, then Trigger on the idle cluster."""
    params = SMOKE if ctx.smoke else Params()
    with ctx.database(NAME) as conninfo, ctx.processes(NAME) as procs, Sql(conninfo) as db:
        coordinator = start_coordinator(procs, conninfo, tls=ctx.tls)
        agent = start_agent(
            procs, coordinator, "bench-latency", capacity=params.slots, extra_args=ctx.agent_flags()
        )
        wait_agents(conninfo, ["bench-latency"], watched=[agent])
        watched = [coordinator.process, agent]
        with Client(coordinator.address, tls=ctx.client_tls, timeout=60) as client:
            cron = _cron_latencies(client, db, watched, params)
            trigger = _trigger_latencies(client, db, watched, params)
    return _result(ctx, params, cron, trigger)


# --- (a) cron -> start --------------------------------------------------------


def _cron_latencies(
    client: Client, db: Sql, watched: list[Process], params: Params
) -> dict[str, list[float]]:
    names = [f"bench.cron-{i}" for i in range(params.cron_tasks)]
    applied_at = datetime.now(UTC)
    client.apply(
        [
            Task(
                name=name,
                command=("/bin/true",),
                triggers=(Cron(expression="* * * * * *"),),
                concurrency=Concurrency(max_active_runs=1000),
            )
            for name in names
        ]
    )
    _sleep_watching(watched, params.warmup_s + params.cron_seconds + 1)
    for name in names:
        client.pause(name)
    _wait_idle(db, watched)
    first = applied_at.replace(microsecond=0) + timedelta(seconds=params.warmup_s + 1)
    rows = db.rows(
        "SELECT r.occurrence, r.created_at, a.started_at FROM hydra_runs r "
        "JOIN hydra_attempts a ON a.run_id = r.id AND a.number = 1 "
        "WHERE r.cause = 'cron' AND r.occurrence >= %s ORDER BY r.occurrence",
        first,
    )
    if not rows:
        raise BenchError("no cron run started")
    split = _split(rows, "occurrence")
    firsts: dict[datetime, datetime] = {}
    for row in rows:
        first = firsts.get(row["occurrence"])
        firsts[row["occurrence"]] = min(first, row["started_at"]) if first else row["started_at"]
    split["first_of_second"] = [
        (started - occurrence).total_seconds() * 1000 for occurrence, started in firsts.items()
    ]
    return split


def _sleep_watching(watched: list[Process], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        for child in watched:
            child.check_running()
        time.sleep(min(left, 0.5))


def _wait_idle(db: Sql, watched: list[Process], timeout: float = 60) -> None:
    def idle() -> bool:
        for child in watched:
            child.check_running()
        active = db.value(
            "SELECT count(*) FROM hydra_runs WHERE state IN ('QUEUED', 'LEASED', 'RUNNING')"
        )
        return int(active) == 0

    wait_for(idle, timeout=timeout, interval=0.1, message="every run to finish")


def _split(rows: list[dict[str, Any]], origin: str) -> dict[str, list[float]]:
    """Per row: origin → start, origin → created, created → start, in ms."""

    def ms(later: datetime, earlier: datetime) -> float:
        return (later - earlier).total_seconds() * 1000

    return {
        "total": [ms(r["started_at"], r[origin]) for r in rows],
        "to_created": [ms(r["created_at"], r[origin]) for r in rows],
        "created_to_start": [ms(r["started_at"], r["created_at"]) for r in rows],
    }


# --- (b) Trigger -> start -----------------------------------------------------


def _trigger_latencies(
    client: Client, db: Sql, watched: list[Process], params: Params
) -> dict[str, list[float]]:
    name = "bench.manual"
    client.apply(
        Task(name=name, command=("/bin/true",), concurrency=Concurrency(max_active_runs=1000))
    )
    rows = []
    for _ in range(params.trigger_samples):
        sent = datetime.now(UTC)
        run, _ = client.trigger(name)
        returned = datetime.now(UTC)
        rows.append({"sent": sent, "returned": returned, **_wait_started(db, watched, run.id)})
        _wait_idle(db, watched)  # the next one finds an idle cluster
        time.sleep(random.uniform(0.02, 0.05))  # and no timer in phase
    split = _split(rows, "sent")
    split["created_to_returned"] = [
        (r["returned"] - r["created_at"]).total_seconds() * 1000 for r in rows
    ]
    return split


def _wait_started(db: Sql, watched: list[Process], run_id: str) -> dict[str, Any]:
    def started() -> dict[str, Any] | None:
        rows = db.rows(
            "SELECT r.created_at, a.started_at FROM hydra_runs r "
            "JOIN hydra_attempts a ON a.run_id = r.id AND a.number = 1 WHERE r.id = %s",
            run_id,
        )
        if not rows:
            for child in watched:
                child.check_running()
        return rows[0] if rows else None

    return wait_for(started, timeout=30, interval=0.002, message=f"run {run_id} to start")


# --- result -------------------------------------------------------------------


def _result(
    ctx: Context, params: Params, cron: dict[str, list[float]], trigger: dict[str, list[float]]
) -> Result:
    cron_total, trig_total = distribution(cron["total"]), distribution(trigger["total"])
    wake = ctx.earlier_value(ceiling.NAME, ceiling.WAKE_P50)
    peer_p50 = ctx.earlier_value(peer.NAME, peer.START_P50)
    peer_p99 = ctx.earlier_value(peer.NAME, peer.START_P99)
    no_peer = "" if peer_p50 else "run with peer"
    metrics = [
        Metric(
            name=CRON_P50,
            value=cron_total["p50"],
            unit="ms",
            target=Target(op="<=", bound=5),
            note=f"{cron_total['n']} occurrences",
        ),
        Metric(name="cron -> start p95", value=cron_total["p95"], unit="ms"),
        Metric(name=CRON_P99, value=cron_total["p99"], unit="ms", target=Target(op="<=", bound=12)),
        Metric(
            name="  run created before its occurrence p50",
            value=-_p50(cron["to_created"]),
            unit="ms",
            note="created and leased ahead (50 ms)",
        ),
        Metric(
            name="  first start of each second p50",
            value=_p50(cron["first_of_second"]),
            unit="ms",
            note=f"of the {params.cron_tasks} runs due together",
        ),
        Metric(
            name=TRIGGER_P50,
            value=trig_total["p50"],
            unit="ms",
            target=Target(op="<=", bound=4),
            note=f"{trig_total['n']} triggers",
        ),
        Metric(name="Trigger -> start p95", value=trig_total["p95"], unit="ms"),
        Metric(
            name=TRIGGER_P99, value=trig_total["p99"], unit="ms", target=Target(op="<=", bound=10)
        ),
        Metric(
            name="  Trigger sent -> run created p50", value=_p50(trigger["to_created"]), unit="ms"
        ),
        Metric(
            name="  run created -> start p50", value=_p50(trigger["created_to_start"]), unit="ms"
        ),
        Metric(
            name="  run created -> Trigger returned p50",
            value=_p50(trigger["created_to_returned"]),
            unit="ms",
            note="the transaction, its commit, the answer",
        ),
        Metric(
            name="cron -> start p50 in NOTIFY floors",
            value=ratio(cron_total["p50"], wake),
            unit="x",
            note="" if wake else "run with ceiling",
        ),
        Metric(
            name="Trigger -> start p50 in NOTIFY floors",
            value=ratio(trig_total["p50"], wake),
            unit="x",
        ),
        Metric(
            name="Trigger/peer defer -> start p50",
            value=ratio(trig_total["p50"], peer_p50),
            unit="x",
            target=Target(op="<", bound=1, text="< 1x"),
            note=no_peer,
        ),
        Metric(
            name="Trigger/peer defer -> start p99",
            value=ratio(trig_total["p99"], peer_p99),
            unit="x",
            target=Target(op="<", bound=1, text="< 1x"),
            note=no_peer,
        ),
    ]
    details = {
        "params": asdict(params),
        "cron_ms": {key: distribution(values) for key, values in cron.items()},
        "trigger_ms": {key: distribution(values) for key, values in trigger.items()},
    }
    return Result(name=NAME, metrics=metrics, details=details)


def _p50(values: list[float]) -> float:
    return distribution(values)["p50"]
