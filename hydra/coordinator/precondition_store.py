"""Recording an agent's verdicts on a leased run's preconditions: the run is
queued again after its poke interval, or ends once precondition_timeout has
passed. Used by the lease store, within its transactions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from hydra.coordinator.store import Cursor, Store, run_uuid
from hydra.coordinator.store_base import spec_of_version
from hydra.domain import OnTimeout, PreconditionVerdict, RunState
from hydra.spec import format_duration


class PreconditionStore(Store):
    """The store, plus precondition verdicts."""

    async def _record_preconditions(
        self,
        cur: Cursor,
        run_id: str,
        lease_token: int,
        *,
        ready: bool,
        verdicts: Sequence[PreconditionVerdict],
        now: datetime,
    ) -> None:
        row = await self.one(
            cur,
            "record_precondition_checks",
            run_id=run_uuid(run_id),
            lease_token=lease_token,
            verdicts=Jsonb([_verdict_json(v) for v in verdicts]),
            checked_at=now,
        )
        if row is None:
            return  # stale lease: the run moved on
        if not ready:
            await self._not_ready(cur, run_id, lease_token, verdicts, now - row["first_checked_at"])
        self.notify_runs_changed(cur, [run_id])

    async def _not_ready(
        self,
        cur: Cursor,
        run_id: str,
        lease_token: int,
        verdicts: Sequence[PreconditionVerdict],
        waited: timedelta,
    ) -> None:
        task = await self.one(cur, "run_spec", run_id=run_id)
        assert task is not None
        spec = spec_of_version(task["task_id"], task["task_version"], task["spec"])
        waiting = "; ".join(f"precondition {v.index}: {v.message}" for v in verdicts if not v.ready)
        timeout = spec.precondition_timeout
        if timeout is None or waited < timeout:
            await self.run_query(
                cur,
                "release_lease",
                run_id=run_id,
                lease_token=lease_token,
                delay=spec.poke_interval,
                reason=f"waiting for preconditions: {waiting}",
            )
            self.notify_dispatch(cur)
            return
        state = RunState.SKIPPED if spec.on_timeout is OnTimeout.SKIP else RunState.FAILED
        await self.run_query(
            cur,
            "end_run_unstarted",
            run_id=run_id,
            lease_token=lease_token,
            state=state.value,
            reason=f"preconditions not ready after {format_duration(timeout)}: {waiting}",
        )
        await self.after_terminal(cur, task["task_name"], task["occurrence"], task["timezone"])


def _verdict_json(verdict: PreconditionVerdict) -> dict[str, Any]:
    checked_at = verdict.checked_at.isoformat() if verdict.checked_at else None
    return {
        "index": verdict.index,
        "ready": verdict.ready,
        "message": verdict.message,
        "checked_at": checked_at,
    }
