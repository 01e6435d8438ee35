"""One-report conveniences over the store's areas, for tests that drive the store
directly (the coordinator records reports in batches, see agents/stream.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from hydra.coordinator.store import Database, attempts, runs
from hydra.coordinator.store.records import AttemptReport, AttemptStart, NewRun, ReportVerdict
from hydra.domain import Run


async def start_attempt(
    store: Database,
    run_id: str,
    lease_token: int,
    agent_id: str,
    argv: Sequence[str],
    started_at: datetime,
) -> bool:
    """LEASED -> RUNNING under this lease; False when the token is not current."""
    start = AttemptStart(
        run_id=run_id, lease_token=lease_token, argv=tuple(argv), started_at=started_at
    )
    return bool(await store.run(attempts.start, agent_id, [start]))


async def finish_attempt(store: Database, report: AttemptReport) -> ReportVerdict:
    """Record how one attempt ended, in a transaction of its own."""
    return await attempts.finish_alone(store, report)


async def create_manual_run(store: Database, new_run: NewRun) -> tuple[Run, bool]:
    """Create a run, or find the one its key or occurrence already has."""
    run_id, created = await store.run(runs.create_or_find, new_run)
    return await store.run(runs.get_run, run_id), created
