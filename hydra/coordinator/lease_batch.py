"""Lease changes made together in one transaction: an agent's messages, handled
as one batch by its stream (see :meth:`LeaseStore.batch`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from hydra.coordinator.records import AttemptReport, AttemptStart, ReportVerdict
from hydra.coordinator.store import Cursor
from hydra.domain import PreconditionVerdict

if TYPE_CHECKING:
    from hydra.coordinator.lease_store import LeaseKey, LeaseStore


class LeaseBatch:
    """Lease changes made in one transaction (see :meth:`LeaseStore.batch`).

    Each method does what the LeaseStore method of the same name does; nothing
    is committed before the batch ends, and an error rolls all of it back.
    """

    def __init__(self, store: LeaseStore, cur: Cursor) -> None:
        self._store = store
        self._cur = cur

    async def start_attempts(self, agent_id: str, starts: Sequence[AttemptStart]) -> set[LeaseKey]:
        """See :meth:`LeaseStore.start_attempt`; one statement for all. The current leases."""
        store, cur = self._store, self._cur
        current = await store._start_all(cur, agent_id, starts)
        store.notify_runs_changed(cur, [run_id for run_id, _ in current])
        return current

    async def finish_attempts(self, reports: Sequence[AttemptReport]) -> list[ReportVerdict]:
        """See :meth:`LeaseStore.finish_attempt`; the runs are locked by one statement.
        A second success of a run raises UniqueViolation (when the batch commits)."""
        store, cur = self._store, self._cur
        verdicts = await store._finish_all(cur, reports)
        accepted = [r.run_id for r, v in zip(reports, verdicts, strict=True) if v.accepted]
        if accepted:
            store.notify_runs_changed(cur, accepted)
            store.notify_dispatch(cur)
        return verdicts

    async def append_output(
        self, run_id: str, lease_token: int, stream: int, data: bytes, *, limit: int
    ) -> None:
        """See :meth:`LeaseStore.append_output`."""
        await self._store._append_output(self._cur, run_id, lease_token, stream, data, limit)

    async def record_preconditions(
        self,
        run_id: str,
        lease_token: int,
        *,
        ready: bool,
        verdicts: Sequence[PreconditionVerdict],
        now: datetime,
    ) -> None:
        """See :meth:`LeaseStore.record_preconditions`."""
        await self._store._record_preconditions(
            self._cur, run_id, lease_token, ready=ready, verdicts=verdicts, now=now
        )

    async def release_lease(
        self, run_id: str, lease_token: int, *, reason: str, delay: timedelta = timedelta(0)
    ) -> bool:
        """See :meth:`LeaseStore.release_lease`."""
        return await self._store._release_lease(
            self._cur, run_id, lease_token, reason=reason, delay=delay
        )
