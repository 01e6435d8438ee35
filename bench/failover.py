"""failover: how long a run waits after its agent is SIGKILLed mid-attempt.

A ``sleep 30`` task with ``max_attempts: 2``; two agents with one slot each.
Each trial triggers a run, waits for attempt 1 to start, then SIGKILLs the
agent running it at a random moment of its heartbeat cycle (and the ``sleep``
it leaves behind), and times from the kill to ``started_at`` of attempt 2 on
the other agent. Expected: the lease TTL minus the time since the last
renewal (heartbeats every ``heartbeat``), plus the reaper's and dispatcher's
reaction. A fresh agent replaces the killed one
before the next trial. Median of the trials.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.procfs import kill_pids, pids_with_env
from bench.results import Metric, Result, Target
from bench.stack import Context, Sql, start_coordinator
from harness.hydra import Coordinator, start_agent, wait_agents
from harness.processes import Process, Processes
from harness.wait import wait_for
from hydra.client import Client, Concurrency, Retry, Task
from hydra.spec import parse_duration

NAME = "failover"
TASK = "bench.failover"


@dataclass(frozen=True, kw_only=True, slots=True)
class Params:
    """Trials and lease timing."""

    trials: int = 5
    lease_ttl: str = "10s"
    heartbeat: str = "2s"


SMOKE = Params(trials=1, lease_ttl="2s", heartbeat="400ms")


@dataclass(kw_only=True)
class _Agents:
    """The live agents of the benchmark, replaced as they are killed."""

    procs: Processes
    coordinator: Coordinator
    conninfo: str
    live: dict[str, Process] = field(default_factory=dict)
    started: int = 0

    def top_up(self, count: int) -> None:
        """Start agents until `count` are live, and wait until they are connected."""
        new = []
        while len(self.live) < count:
            agent_id = f"bench-failover-{self.started}"
            self.started += 1
            self.live[agent_id] = start_agent(self.procs, self.coordinator, agent_id, capacity=1)
            new.append(agent_id)
        if new:
            wait_agents(self.conninfo, new, watched=[self.live[i] for i in new])


def run(ctx: Context) -> Result:
    """Kill the running agent `trials` times; time each takeover."""
    params = SMOKE if ctx.smoke else Params()
    ttl = parse_duration(params.lease_ttl, "lease_ttl").total_seconds()
    heartbeat = parse_duration(params.heartbeat, "heartbeat").total_seconds()
    with ctx.database(NAME) as conninfo, ctx.processes(NAME) as procs, Sql(conninfo) as db:
        coordinator = start_coordinator(
            procs,
            conninfo,
            lease_ttl=params.lease_ttl,
            heartbeat=params.heartbeat,
            kill_grace="1s",
        )
        agents = _Agents(procs=procs, coordinator=coordinator, conninfo=conninfo)
        with Client(coordinator.address, timeout=60) as client:
            client.apply(
                Task(
                    name=TASK,
                    command=("sleep", "30"),
                    retry=Retry(max_attempts=2, backoff=timedelta(seconds=1)),
                    concurrency=Concurrency(max_active_runs=10),
                )
            )
            seconds = [_trial(client, db, agents, ttl, heartbeat) for _ in range(params.trials)]
    median = statistics.median(seconds)
    return Result(
        name=NAME,
        metrics=[
            Metric(
                name=f"kill -> retry started (median of {len(seconds)})",
                value=median,
                unit="s",
                target=Target(op="<=", bound=ttl + 1, text=f"<= TTL + 1 s ({ttl + 1:g})"),
                note=f"lease TTL {params.lease_ttl}, heartbeat {params.heartbeat}",
            ),
            Metric(name="slowest trial", value=max(seconds), unit="s"),
        ],
        details={"params": asdict(params), "trials_s": seconds},
    )


def _trial(client: Client, db: Sql, agents: _Agents, ttl: float, heartbeat: float) -> float:
    agents.top_up(2)
    run, _ = client.trigger(TASK)
    owner = _wait_attempt(db, run.id, 1, timeout=30)["agent_id"]
    # Killed at a random point of the heartbeat cycle, not right after the lease
    # was granted (which would always cost the full TTL).
    time.sleep(random.uniform(0, 2 * heartbeat))
    victim = agents.live.pop(owner)
    killed_at = datetime.now(UTC)
    victim.kill()
    kill_pids(pids_with_env("HYDRA_RUN_ID", run.id))  # the orphaned `sleep`
    retried = _wait_attempt(db, run.id, 2, timeout=ttl + 30)
    seconds: float = (retried["started_at"] - killed_at).total_seconds()
    client.cancel(run.id, "failover trial over")  # frees the other agent's slot
    _wait_terminal(db, run.id)
    return seconds


def _wait_attempt(db: Sql, run_id: str, number: int, timeout: float) -> dict[str, Any]:
    def started() -> dict[str, Any] | None:
        rows = db.rows(
            "SELECT agent_id, started_at FROM hydra_attempts WHERE run_id = %s AND number = %s",
            run_id,
            number,
        )
        return rows[0] if rows else None

    return wait_for(
        started, timeout=timeout, interval=0.01, message=f"attempt {number} of run {run_id}"
    )


def _wait_terminal(db: Sql, run_id: str) -> None:
    def done() -> bool:
        state = db.value("SELECT state FROM hydra_runs WHERE id = %s", run_id)
        return state in ("SUCCEEDED", "FAILED", "CANCELLED")

    wait_for(done, timeout=30, interval=0.05, message=f"run {run_id} to end")
