"""What agent streams cost a coordinator, and what an idle agent costs its host.

On an empty database (so no lease is ever offered), one coordinator runs
alone for a window (baseline RSS and CPU), then :mod:`bench.agent_sim` opens
N streams from one process, each heartbeating every 2 s. Once every agent is
recorded as connected and the heartbeats have settled, the coordinator's CPU
(utime + stime from /proc over a window), RSS and the database's commits per
second (``pg_stat_database``; the N streams send N/2 heartbeats a second) are
read again; the RSS per stream is the growth over the baseline divided by N. Last, one real
``hydra agent`` connects and its RSS is read once it is idle.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.procfs import rss_kib
from bench.stack import Sql, cpu_percent, start_coordinator
from harness.hydra import Coordinator, start_agent, wait_agents
from harness.processes import Process, Processes
from harness.wait import wait_for


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamParams:
    """How many streams; how long to settle and to measure."""

    streams: int = 500
    settle_s: float = 5.0
    window_s: float = 20.0


SMOKE_STREAMS = StreamParams(streams=10, settle_s=0.5, window_s=1.0)


def measure(procs: Processes, conninfo: str, params: StreamParams) -> dict[str, Any]:
    """Baseline, N streams, and an idle agent, against one coordinator."""
    coordinator = start_coordinator(procs, conninfo, name="coordinator-streams")
    pid = coordinator.process.pid
    with Sql(conninfo) as db:
        time.sleep(params.settle_s)
        baseline = {"rss_kib": rss_kib(pid), "cpu_pct": cpu_percent(pid, params.window_s)}
        sim = _start_crowd(procs, coordinator, db, params.streams)
        time.sleep(params.settle_s)
        commits_before, started = _commits(db), time.monotonic()
        loaded = {
            "cpu_pct": cpu_percent(pid, params.window_s, [coordinator.process, sim]),
            "rss_kib": rss_kib(pid),
            "sim_rss_kib": rss_kib(sim.pid),
        }
        elapsed = time.monotonic() - started
        loaded["commits_per_s"] = (_commits(db) - commits_before) / elapsed
        agent_rss = _idle_agent_rss(procs, coordinator, conninfo, params.settle_s)
    per_stream = (loaded["rss_kib"] - baseline["rss_kib"]) / params.streams
    return {
        "streams": params.streams,
        "baseline": baseline,
        "loaded": loaded,
        "rss_per_stream_kib": per_stream,
        "idle_agent_rss_kib": agent_rss,
    }


def _commits(db: Sql) -> int:
    """Transactions committed in this database so far (the statistics lag by up to 1 s)."""
    db.value("SELECT pg_stat_clear_snapshot()")
    count = db.value("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
    return int(count)


def _start_crowd(procs: Processes, coordinator: Coordinator, db: Sql, streams: int) -> Process:
    argv = [sys.executable, "-m", "bench.agent_sim", "--target", coordinator.address]
    sim = procs.start("agent-sim", [*argv, "--count", str(streams)])

    def all_connected() -> bool:
        sim.check_running()
        coordinator.process.check_running()
        count = db.value(
            "SELECT count(*) FROM hydra_agents WHERE state = 'connected' AND id LIKE %s", "sim-%"
        )
        return int(count) >= streams

    wait_for(all_connected, timeout=120, interval=0.2, message=f"{streams} simulated agents")
    return sim


def _idle_agent_rss(
    procs: Processes, coordinator: Coordinator, conninfo: str, settle_s: float
) -> int:
    agent = start_agent(procs, coordinator, "bench-idle-agent", capacity=1)
    wait_agents(conninfo, ["bench-idle-agent"], watched=[agent])
    time.sleep(settle_s)
    agent.check_running()
    return rss_kib(agent.pid)
