"""The cluster-wide figures that metrics export, read from the database (so
every coordinator reports the same). Works in the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from hydra.coordinator.store.transaction import Transaction

#: Runs per task (the latest occurrences) searched for its last success and failure:
#: the read costs at most this many index entries per task, however long the history.
RECENT_RUNS = 200


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskFinishes:
    """When a task's latest success and latest failure finished (None: never)."""

    task: str
    last_success: datetime | None
    last_failure: datetime | None


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentFigures:
    """Agents in one state (connected, draining) and their slots."""

    state: str
    agents: int
    capacity: int
    used: int


@dataclass(frozen=True, kw_only=True, slots=True)
class ClusterFigures:
    """What the cluster-wide metrics show at one moment."""

    runs_by_state: dict[str, int] = field(default_factory=dict)
    tasks: tuple[TaskFinishes, ...] = ()
    agents: tuple[AgentFigures, ...] = ()


async def read(tx: Transaction, *, window: int = RECENT_RUNS) -> ClusterFigures:
    """Queue depth by state, each task's last success and failure among its latest
    `window` runs, agents and slots."""
    runs = {r["state"]: int(r["runs"]) for r in await tx.all("metrics_runs_by_state")}
    tasks = tuple(
        TaskFinishes(task=r["name"], last_success=r["last_success"], last_failure=r["last_failure"])
        for r in await tx.all("metrics_task_last_finished", window=window)
    )
    agents = tuple(
        AgentFigures(
            state=r["state"], agents=r["agents"], capacity=int(r["capacity"]), used=int(r["used"])
        )
        for r in await tx.all("metrics_agents")
    )
    return ClusterFigures(runs_by_state=runs, tasks=tasks, agents=agents)
