"""Many registered cron tasks: registering them fast, and timing the trigger loop.

**Registering.** Two template tasks go through the coordinator's own apply
path (``hydra.coordinator.specs.apply_spec``: validation, first fire time, one
store transaction): one due every second (``* * * * * *``) and one due next
1 January (``0 0 1 1 *``). Then SQL clones them (task, version with the name
replaced in the spec, trigger with its ``next_fire_at``) with
``generate_series``, in three INSERTs of one statement: ``due`` tasks due every
second and the rest far in the future. 100,000 tasks take seconds, where
100,000 Apply RPCs would take many minutes, and the rows are exactly what
Apply writes.

**Timing.** The real :class:`~hydra.coordinator.loops.triggers.TriggerLoop`
runs in this process, its ``tick`` timed (one transaction: lock the due
triggers, create their runs, advance them); a measured tick is the time of the
ticks of the ``step`` that fired the per-second triggers. No coordinator runs
meanwhile, so nothing else competes for the due triggers. The sizes take turns,
one tick each per round in a random order, so that the machine's other work
weighs on every size alike.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import psycopg
from psycopg_pool import AsyncConnectionPool

from hydra.coordinator.agents.sessions import SessionRegistry
from hydra.coordinator.loops.dispatcher import Dispatcher
from hydra.coordinator.loops.timing import utcnow
from hydra.coordinator.loops.triggers import TriggerLoop
from hydra.coordinator.migrate import migrate
from hydra.coordinator.rendering import RenderPool
from hydra.coordinator.specs import apply_spec
from hydra.coordinator.store import Database, open_pool
from hydra.coordinator.store.records import LeaseTimes
from hydra.domain import Cron, TaskSpec

DUE_PREFIX = "scale-due-"
FAR_PREFIX = "scale-far-"

CLONE = """
WITH new_tasks AS (
    INSERT INTO hydra_tasks (name, version)
    SELECT %(prefix)s || i, 1 FROM generate_series(%(first)s::int, %(last)s::int) AS i
    RETURNING id, name
), versions AS (
    INSERT INTO hydra_task_versions (task_id, version, spec)
    SELECT n.id, 1, jsonb_set(v.spec, '{name}', to_jsonb(n.name))
    FROM new_tasks n
    JOIN hydra_task_versions v ON v.task_id = %(template)s AND v.version = 1
)
INSERT INTO hydra_triggers (task_id, position, kind, spec, next_fire_at, active)
SELECT n.id, g.position, g.kind, g.spec, g.next_fire_at, g.active
FROM new_tasks n JOIN hydra_triggers g ON g.task_id = %(template)s
"""
#: The per-second triggers start at the next whole second, so no tick catches up.
ALIGN_DUE = """
UPDATE hydra_triggers SET next_fire_at = date_trunc('second', now()) + interval '1 second'
WHERE task_id IN (SELECT id FROM hydra_tasks WHERE name LIKE %(pattern)s)
"""


def template(name: str, expression: str) -> TaskSpec:
    """A ``/bin/true`` task on one cron expression."""
    return TaskSpec(name=name, command=("/bin/true",), triggers=(Cron(expression=expression),))


async def populate(conninfo: str, total: int, due: int) -> float:
    """Migrate, then register `total` tasks, `due` of them due every second; seconds taken."""
    started = time.perf_counter()
    await migrate(conninfo)
    pool = open_pool(conninfo, 2)
    await pool.open(wait=True)
    try:
        store = Database(pool)
        now = utcnow()
        await apply_spec(store, template(f"{DUE_PREFIX}0", "* * * * * *"), dry_run=False, now=now)
        await apply_spec(store, template(f"{FAR_PREFIX}0", "0 0 1 1 *"), dry_run=False, now=now)
    finally:
        await pool.close()
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await _clone(conn, DUE_PREFIX, due - 1)
        await _clone(conn, FAR_PREFIX, total - due - 1)
        await conn.execute("ANALYZE")
    return time.perf_counter() - started


async def _clone(conn: psycopg.AsyncConnection[object], prefix: str, copies: int) -> None:
    if copies <= 0:
        return
    template_id = await _task_id(conn, f"{prefix}0")
    async with conn.transaction():
        await conn.execute(
            CLONE, {"prefix": prefix, "first": 1, "last": copies, "template": template_id}
        )


async def _task_id(conn: psycopg.AsyncConnection[object], name: str) -> int:
    cursor = await conn.execute("SELECT id FROM hydra_tasks WHERE name = %s", (name,))
    row = await cursor.fetchone()
    assert row is not None, f"template {name} missing"
    return int(cast(tuple[int], row)[0])


class TimedTriggerLoop(TriggerLoop):
    """The real trigger loop, its ticks (one transaction each) timed."""

    def __init__(self, database: Database) -> None:
        sessions = SessionRegistry()  # no agent: nothing is leased
        # Never started: with no agent, nothing is rendered.
        dispatcher = Dispatcher(database, sessions, LeaseTimes(), renderer=RenderPool())
        super().__init__(database, dispatcher)
        self.elapsed = 0.0
        self.fired = 0

    def reset(self) -> None:
        """Start a new tick."""
        self.elapsed, self.fired = 0.0, 0

    async def tick(self) -> int:
        """Timed :meth:`TriggerLoop.tick`."""
        start = time.perf_counter()
        fired = await super().tick()
        self.elapsed += time.perf_counter() - start
        self.fired += fired
        return fired


@dataclass
class TickClock:
    """The trigger loop of one database, run a tick at a time and timed."""

    pool: AsyncConnectionPool
    loop: TimedTriggerLoop

    @classmethod
    async def open(cls, conninfo: str) -> TickClock:
        """A pool and a timed trigger loop on `conninfo`."""
        pool = open_pool(conninfo, 2)
        await pool.open(wait=True)
        return cls(pool=pool, loop=TimedTriggerLoop(Database(pool)))

    async def tick(self) -> tuple[float, int]:
        """(milliseconds, triggers fired) of the next tick that fires the per-second
        triggers. They are first moved to the next whole second, so the tick never
        catches up on occurrences missed while other databases were measured."""
        async with self.pool.connection() as conn:
            await conn.execute(ALIGN_DUE, {"pattern": f"{DUE_PREFIX}%"})
        for _ in range(3):  # the first step usually only sleeps until the second
            self.loop.reset()
            await asyncio.wait_for(self.loop.step(), timeout=10)
            if self.loop.fired:
                return self.loop.elapsed * 1000, self.loop.fired
        raise RuntimeError("no trigger fired in three trigger-loop steps")

    async def close(self) -> None:
        """Close the pool."""
        await self.pool.close()


async def interleaved_ticks(
    conninfos: Mapping[int, str], rounds: int, *, skip: int = 1
) -> dict[int, list[tuple[float, int]]]:
    """Ticks of every database in turn, `rounds` times after `skip` warm-up rounds,
    so that load from elsewhere falls on every size alike."""
    clocks = {size: await TickClock.open(conninfo) for size, conninfo in conninfos.items()}
    measured: dict[int, list[tuple[float, int]]] = {size: [] for size in clocks}
    order = list(clocks)
    try:
        for round_number in range(skip + rounds):
            random.shuffle(order)  # no size always ticks first
            for size in order:
                tick = await clocks[size].tick()
                if round_number >= skip:
                    measured[size].append(tick)
    finally:
        for clock in clocks.values():
            await clock.close()
    return measured
