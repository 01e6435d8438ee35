"""An agent's verdicts on a leased run's preconditions: the run is queued again
after its poke interval, or ends once precondition_timeout has passed. Works in
the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from psycopg.types.json import Jsonb

from hydra.coordinator.store import runs
from hydra.coordinator.store.rows import verdict_json
from hydra.coordinator.store.runs import run_uuid
from hydra.coordinator.store.transaction import Transaction
from hydra.domain import OnTimeout, PreconditionVerdict, RunState
from hydra.spec import format_duration


async def record(
    tx: Transaction,
    run_id: str,
    lease_token: int,
    *,
    ready: bool,
    verdicts: Sequence[PreconditionVerdict],
    now: datetime,
) -> None:
    """Record an agent's verdicts under a lease; when not ready, queue the run again
    after the poke interval, or end it once precondition_timeout has passed."""
    row = await tx.one(
        "record_precondition_checks",
        run_id=run_uuid(run_id),
        lease_token=lease_token,
        verdicts=Jsonb([verdict_json(v) for v in verdicts]),
        checked_at=now,
    )
    if row is None:
        return  # stale lease: the run moved on
    tx.metrics.preconditions_checked(ready)
    if not ready:
        await _not_ready(tx, run_id, lease_token, verdicts, now - row["first_checked_at"])
    tx.runs_changed([run_id])


async def _not_ready(
    tx: Transaction,
    run_id: str,
    lease_token: int,
    verdicts: Sequence[PreconditionVerdict],
    waited: timedelta,
) -> None:
    task = await tx.one("run_spec", run_id=run_id)
    assert task is not None
    spec = tx.spec(task["task_id"], task["task_version"], task["spec"])
    waiting = "; ".join(f"precondition {v.index}: {v.message}" for v in verdicts if not v.ready)
    timeout = spec.precondition_timeout
    if timeout is None or waited < timeout:
        await tx.execute(
            "release_lease",
            run_id=run_id,
            lease_token=lease_token,
            delay=spec.poke_interval,
            reason=f"waiting for preconditions: {waiting}",
        )
        tx.work_available()
        return
    state = RunState.SKIPPED if spec.on_timeout is OnTimeout.SKIP else RunState.FAILED
    await tx.execute(
        "end_run_unstarted",
        run_id=run_id,
        lease_token=lease_token,
        state=state.value,
        reason=f"preconditions not ready after {format_duration(timeout)}: {waiting}",
    )
    tx.metrics.run_finished(task["task_name"], state.value)
    await runs.after_terminal(tx, task["task_name"], task["occurrence"], task["timezone"])
