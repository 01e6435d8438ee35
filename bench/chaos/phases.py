"""The phases of a chaos run on a started PostgreSQL: set the cluster up, apply
chaos, recover, pause and settle, stop Hydra, and read what the database holds."""

from __future__ import annotations

import contextlib
import random
import sys
import time
from collections.abc import Iterator
from datetime import datetime

import psycopg

from bench.chaos import workload
from bench.chaos.actions import Monkey, utcnow
from bench.chaos.checks import Timeline
from bench.chaos.cluster import (
    NOT_YET,
    POLL_S,
    Cluster,
    add_processes,
    migrate,
    start_all,
    wait_agents,
    wait_coordinators,
    wait_database,
)
from bench.chaos.options import Options
from bench.chaos.record import RunRecord
from bench.chaos.snapshot import Snapshot, load
from bench.chaos.workload import Workload
from harness.processes import stop_together
from harness.wait import WaitTimeout, wait_for

#: After the chaos, how long every cron task has to fire again.
REFIRE_TIMEOUT_S = 30.0


def exercise(
    cluster: Cluster, options: Options, timings: dict[str, float]
) -> tuple[RunRecord, Snapshot]:
    """Set the cluster up, apply chaos, let it settle; what was done and what the
    database then holds."""
    rng = random.Random(options.seed)
    with timed(timings, "setup"):
        migrate(cluster)
        add_processes(cluster, options)
        start_all(cluster)
        tasks = workload.build(cluster.tag, options.tasks, rng)
        applied = workload.apply(tasks, cluster.addresses, cluster.work_dir)
    monkey = Monkey(cluster, rng, options.lease_ttl)
    with timed(timings, "chaos"):
        monkey.run(options.duration)
    with timed(timings, "recover"):
        chaos_ended = _recover(cluster, monkey, tasks)
    with timed(timings, "settle"):
        paused = workload.pause(tasks.cron_names, cluster.addresses, cluster.work_dir)
        _settle(cluster, monkey, tasks, options.settle_timeout)
    with timed(timings, "stop"):
        stop_together([a.process for a in cluster.agents])
        stop_together([c.process for c in cluster.coordinators])
    record = RunRecord(
        workload=tasks,
        actions=monkey.actions,
        exits=monkey.exits,
        timeline=Timeline(applied=applied, chaos_ended=chaos_ended, paused=paused),
    )
    return record, load(cluster.conninfo, tasks.names)


def _recover(cluster: Cluster, monkey: Monkey, tasks: Workload) -> datetime:
    """Bring everything back; wait until it serves and every cron task fired again.

    Returns when everything was back.
    """
    monkey.restore_all()
    chaos_ended = utcnow()
    wait_database(cluster)
    wait_coordinators(cluster)
    wait_agents(cluster)
    try:
        wait_for(
            lambda: _tasks_behind(cluster, tasks, chaos_ended) == 0,
            timeout=REFIRE_TIMEOUT_S,
            interval=POLL_S,
            message="every cron task to fire after the chaos",
            not_yet=NOT_YET,
        )
    except WaitTimeout as error:
        print(f"bench.chaos: {error}; check 1 will say which", file=sys.stderr, flush=True)
    return chaos_ended


def _tasks_behind(cluster: Cluster, tasks: Workload, since: datetime) -> int:
    """Cron tasks without a run for an occurrence at or after `since`."""
    query = (
        "SELECT count(*) FROM hydra_tasks t WHERE t.name = ANY(%s) AND NOT EXISTS "
        "(SELECT 1 FROM hydra_runs r WHERE r.task_id = t.id AND r.occurrence >= %s)"
    )
    return _count(cluster, query, tasks.cron_names, since)


def _settle(cluster: Cluster, monkey: Monkey, tasks: Workload, timeout: float) -> None:
    """Wait until no run of the tasks is queued, leased or running."""
    query = (
        "SELECT count(*) FROM hydra_runs r JOIN hydra_tasks t ON t.id = r.task_id "
        "WHERE t.name = ANY(%s) AND r.state IN ('QUEUED', 'LEASED', 'RUNNING')"
    )

    def settled() -> bool:
        monkey.tick()
        return _count(cluster, query, tasks.names) == 0

    try:
        message = "every run to end"
        wait_for(settled, timeout=timeout, interval=POLL_S, message=message, not_yet=NOT_YET)
    except WaitTimeout as error:
        print(f"bench.chaos: {error}; check 4 will say which", file=sys.stderr, flush=True)


def _count(cluster: Cluster, query: str, *params: object) -> int:
    with psycopg.connect(cluster.conninfo, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(query, params).fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    """Add the seconds the block takes to ``timings[phase]``."""
    began = time.monotonic()
    try:
        yield
    finally:
        timings[phase] = timings.get(phase, 0.0) + time.monotonic() - began
