"""The pruner: deletes what is past retention, online, one coordinator at a time.

Every coordinator runs one; a pass is made by the one holding the pruner's lease
(a row of ``hydra_pruner``, renewed in every batch's transaction and given up when
the pass ends): another coordinator whose pass comes meanwhile finds it held and
waits for its next one. A pass deletes, in batches of at most
``batch`` rows per transaction that lock only what they delete (``SKIP
LOCKED``): finished runs past their task's retention with their attempts and
output (``store.retention``), then output past ``output_max_age``, records of
dropped occurrences and late marks past their task's ``max_age``, audit entries
past ``--audit-retention``, task versions no run points to, and deleted tasks
whose runs are all gone. After each batch it pauses as long as the batch took
(``pace``), so that dispatch keeps its latency while a big backlog is pruned, and
the size of the next batch follows the time this one took: a batch slower than
``batch_seconds`` halves the next (down to ``MIN_BATCH`` rows), a quick one
doubles it (up to ``batch``), so that no transaction holds its locks long however
loaded the database is (docs/retention.md).

What this coordinator pruned is counted in ``Pruner.stats`` (plain integers, read
by the metrics), and each pass that pruned anything is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import TypeVar

from hydra.coordinator.loops.timing import utcnow
from hydra.coordinator.store import Database, Transaction, retention
from hydra.coordinator.store.retention import Policy, Scan
from hydra.domain import Retention

log = logging.getLogger("hydra.coordinator.pruner")

#: Pause between two passes unless configured (``--prune-interval``).
PRUNE_INTERVAL = timedelta(minutes=1)
#: Runs (or other rows) deleted per transaction at most.
PRUNE_BATCH = 1000
#: How long the lease outlives a batch: a pruner that died is replaced after this.
LEASE_TTL = timedelta(seconds=30)
#: Pause after a batch, as a multiple of the time the batch took.
PACE = 1.0
#: What a batch's transaction should take at most: the batch size adapts to it.
BATCH_SECONDS = 0.1
#: The smallest batch the adaptation goes down to.
MIN_BATCH = 50
_MICROSECOND = timedelta(microseconds=1)
T = TypeVar("T")


@dataclass(kw_only=True, slots=True)
class PruneStats:
    """What this coordinator's pruner did since it started (counters, for the metrics)."""

    passes: int = 0
    #: Passes not made because another coordinator held the lease.
    passes_skipped: int = 0
    batches: int = 0
    runs: int = 0
    attempts: int = 0
    output_chunks: int = 0
    #: Finished notifications of pruned runs.
    notifications: int = 0
    audit_entries: int = 0
    #: Records of dropped occurrences and late marks past their task's max_age.
    occurrence_records: int = 0
    task_versions: int = 0
    tasks: int = 0
    #: Seconds the last pass took, and when it ended (time.time()); 0 before the first.
    last_pass_seconds: float = 0.0
    last_pass_finished_at: float = 0.0

    def add(self, other: PruneStats) -> None:
        """Add another's row counts to these."""
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


_COUNTS = (
    *("batches", "runs", "attempts", "output_chunks", "notifications"),
    *("audit_entries", "occurrence_records", "task_versions", "tasks"),
)


class LeaseLost(Exception):
    """Another coordinator holds the pruner's lease."""


class Pruner:
    """Prunes the database to its retention, a pass every ``interval``."""

    def __init__(
        self,
        database: Database,
        holder: str,
        *,
        defaults: Retention,
        audit_retention: timedelta | None = None,
        interval: timedelta = PRUNE_INTERVAL,
        batch: int = PRUNE_BATCH,
        pace: float = PACE,
        batch_seconds: float | None = BATCH_SECONDS,
    ) -> None:
        """``batch_seconds`` None keeps every batch at ``batch`` rows."""
        self._db = database
        self._holder = holder
        self._defaults = defaults
        self._audit_retention = audit_retention
        self._interval = interval
        self._batch_size = batch
        self._pace = pace
        self._batch_seconds = batch_seconds
        #: Rows the next batch may delete (adapted to the time batches take).
        self.size = batch
        #: Per task: the occurrence up to which every run's old output is gone.
        self._output_after: dict[int, datetime] = {}
        #: Since start; ``pass_stats`` is the pass in progress (or the last one).
        self.stats = PruneStats()
        self.pass_stats = PruneStats()

    async def step(self) -> None:
        """One pass, then the pause."""
        await self.prune_once()
        await asyncio.sleep(self._interval.total_seconds())

    async def prune_once(self) -> bool:
        """One pass over everything; False if another coordinator holds the lease."""
        started, clock = utcnow(), time.monotonic()
        self.pass_stats = PruneStats()
        try:
            await self._pass()
        except LeaseLost:
            self.stats.passes_skipped += 1
            return False
        finally:
            self.stats.add(self.pass_stats)
        elapsed = time.monotonic() - clock
        await self._record(started, elapsed)
        return True

    async def _pass(self) -> None:
        policies = await self._batch(lambda tx: retention.policies(tx, self._defaults))
        await self._prune_runs(policies)
        await self._prune_output(policies)
        await self._prune_occurrence_records(policies)
        if self._audit_retention is not None:
            await self._drain(
                "audit_entries", retention.delete_old_audit_entries, self._audit_retention
            )
        await self._drain("task_versions", retention.delete_unused_versions)
        await self._drain("tasks", retention.delete_emptied_tasks)

    async def _record(self, started: datetime, elapsed: float) -> None:
        stats = self.pass_stats
        stats.last_pass_seconds = self.stats.last_pass_seconds = elapsed
        self.stats.last_pass_finished_at = time.time()
        self.stats.passes += 1
        async with self._db.transaction() as tx:
            await retention.record_pass(tx, self._holder, started_at=started, runs=stats.runs)
        if any(getattr(stats, name) for name in _COUNTS if name != "batches"):
            log.info("pruned %s in %.1fs", _summary(stats), elapsed)

    async def _batch(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        """`work` in a transaction that renews the lease, then the pause."""
        clock = time.monotonic()
        async with self._db.transaction() as tx:
            if not await retention.claim(tx, self._holder, LEASE_TTL):
                raise LeaseLost
            result = await work(tx)
        self.pass_stats.batches += 1
        elapsed = time.monotonic() - clock
        self._adapt(elapsed)
        await asyncio.sleep(max(0.001, elapsed * self._pace))
        return result

    def _adapt(self, elapsed: float) -> None:
        """The next batch's size from the time this one took."""
        if self._batch_seconds is None:
            return
        if elapsed > self._batch_seconds:
            self.size = max(min(MIN_BATCH, self._batch_size), self.size // 2)
        elif elapsed < self._batch_seconds / 2:
            self.size = min(self._batch_size, self.size * 2)

    # --- runs ------------------------------------------------------------------------

    async def _prune_runs(self, policies: list[Policy]) -> None:
        """Runs past retention, oldest first across every task (the order they were
        written in, so that a batch deletes neighbouring rows)."""
        aged = [p for p in policies if p.retention.max_age is not None]
        after = retention.START
        while aged:
            limit = self.size
            scan = await self._batch(
                lambda tx, a=after, n=limit: self._delete_runs(tx, aged, a, n)  # type: ignore[misc]
            )
            if scan.scanned < limit or scan.scanned_until is None:
                return
            after = (scan.scanned_until, scan.scanned_id or "")

    async def _with_old_runs(
        self, ages: dict[int, timedelta], after: dict[int, datetime]
    ) -> set[int]:
        """The tasks with runs older than their age (after their cursor), in chunks."""
        found: set[int] = set()
        for chunk in self._chunks(ages):
            found |= await self._batch(
                lambda tx, c=chunk: retention.tasks_with_old_runs(tx, c, after)  # type: ignore[misc]
            )
        return found

    async def _delete_runs(
        self, tx: Transaction, policies: list[Policy], after: tuple[datetime, str], limit: int
    ) -> Scan:
        scan = await retention.lock_prunable_runs(tx, policies, after=after, limit=limit)
        if scan.run_ids:
            deleted = await retention.delete_runs(tx, scan.run_ids)
            self.pass_stats.runs += deleted["runs"]
            self.pass_stats.attempts += deleted["attempts"]
            self.pass_stats.output_chunks += deleted["output_chunks"]
            self.pass_stats.notifications += deleted["notifications"]
        return scan

    # --- output ----------------------------------------------------------------------

    async def _prune_output(self, policies: list[Policy]) -> None:
        ages = {
            p.task_id: p.retention.output_max_age for p in policies if p.retention.output_max_age
        }
        due = await self._with_old_runs(ages, self._output_after)
        for policy in policies:
            if policy.task_id in due:
                await self._prune_task_output(policy)

    async def _prune_task_output(self, policy: Policy) -> None:
        after = self._output_after.get(policy.task_id)
        while True:
            limit = self.size
            scan = await self._batch(
                lambda tx, a=after, n=limit: self._delete_output(tx, policy, a, n)  # type: ignore[misc]
            )
            if scan.pending_from is not None:
                after = scan.pending_from - _MICROSECOND
                break
            after = scan.scanned_until or after
            if scan.scanned < limit:
                break
        if after is not None:
            self._output_after[policy.task_id] = after

    async def _delete_output(
        self, tx: Transaction, policy: Policy, after: datetime | None, limit: int
    ) -> Scan:
        scan = await retention.lock_runs_with_old_output(tx, policy, after=after, limit=limit)
        if scan.run_ids:
            self.pass_stats.output_chunks += await retention.delete_output(tx, scan.run_ids)
        return scan

    # --- occurrence records -----------------------------------------------------------

    async def _prune_occurrence_records(self, policies: list[Policy]) -> None:
        """Records of dropped occurrences and late marks of live tasks past their
        max_age (a deleted task's go with it), in chunks of tasks."""
        ages = {
            p.task_id: p.retention.max_age
            for p in policies
            if p.retention.max_age is not None and not p.deleted
        }
        for chunk in self._chunks(ages):
            await self._drain("occurrence_records", retention.delete_old_occurrence_records, chunk)

    # --- the rest --------------------------------------------------------------------

    async def _drain(
        self, counter: str, delete: Callable[..., Awaitable[int]], *args: object
    ) -> None:
        """Batches of one delete (given `args`, then the batch's size) until one
        deletes less than a full batch; what went is added to `counter`."""
        while True:
            limit = self.size
            deleted = await self._batch(
                lambda tx, n=limit: delete(tx, *args, n)  # type: ignore[misc]
            )
            setattr(self.pass_stats, counter, getattr(self.pass_stats, counter) + deleted)
            if deleted < limit:
                return

    def _chunks(self, ages: dict[int, T]) -> Iterator[dict[int, T]]:
        """`ages` a batch's worth of tasks at a time."""
        ids = list(ages)
        for start in range(0, len(ids), self._batch_size):
            yield {task_id: ages[task_id] for task_id in ids[start : start + self._batch_size]}


def _summary(stats: PruneStats) -> str:
    parts = [f"{getattr(stats, f.name)} {f.name.replace('_', ' ')}" for f in fields(stats)]
    return ", ".join(p for p, f in zip(parts, fields(stats), strict=True) if f.name in _COUNTS)
