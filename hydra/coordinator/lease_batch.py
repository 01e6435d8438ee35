"""Lease changes made together in one transaction: an agent's messages, handled
as one batch by its stream (see :meth:`LeaseStore.batch`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from hydra.coordinator.records import AttemptReport, ReportVerdict
from hydra.coordinator.store import Cursor
from hydra.domain import PreconditionVerdict

if TYPE_CHECKING:
    from hydra.coordinator.lease_store import LeaseStore


class LeaseBatch:
    """Lease changes made in one transaction (see :meth:`LeaseStore.batch`).

    Each method does what the LeaseStore method of the same name does; nothing
    is committed before the batch ends, and an error rolls all of it back.
    """

    def __init__(self, store: LeaseStore, cur: Cursor) -> None:
        self._store = store
        self._cur = cur

    async def start_attempt(
        self,
        run_id: str,
        lease_token: int,
        agent_id: str,
        argv: Sequence[str],
        started_at: datetime,
    ) -> bool:
        """See :meth:`LeaseStore.start_attempt`."""
        store, cur = self._store, self._cur
        number = await store._start(cur, run_id, lease_token, agent_id, argv, started_at)
        if number is not None:
            store.notify_runs_changed(cur, [run_id])
        return number is not None

    async def finish_attempt(self, report: AttemptReport) -> ReportVerdict:
        """See :meth:`LeaseStore.finish_attempt`; a second success raises UniqueViolation."""
        store, cur = self._store, self._cur
        verdict = await store._finish(cur, report)
        if verdict.accepted:
            store.notify_runs_changed(cur, [report.run_id])
            store.notify_dispatch(cur)
        return verdict

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
