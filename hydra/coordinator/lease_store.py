"""Lease statements: claim, renew, start, finish, expire. Every state change is
guarded by the run's current fencing token (compare-and-set), so a report that
carries an old token changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from hydra.coordinator.lease_batch import LeaseBatch
from hydra.coordinator.precondition_store import PreconditionStore
from hydra.coordinator.records import (
    AttemptReport,
    AttemptStart,
    ClaimedRun,
    Heartbeat,
    ReportVerdict,
)
from hydra.coordinator.store import Cursor, Row, run_uuid
from hydra.coordinator.store_base import spec_of_version
from hydra.domain import After, AttemptState, PreconditionVerdict, RunState, TaskSpec

log = logging.getLogger("hydra.coordinator.leases")

#: Agent outcome -> attempt state.
_ATTEMPT_STATE = {
    "SUCCEEDED": AttemptState.SUCCEEDED,
    "FAILED": AttemptState.FAILED,
    "TIMED_OUT": AttemptState.TIMED_OUT,
    "CANCELLED": AttemptState.CANCELLED,
    "FENCED": AttemptState.LOST,
}

LeaseKey = tuple[str, int]

#: Runs due this soon may be leased already; the agent starts them at their time.
#: Long enough to cover leasing and the offer's trip, short enough that a run
#: created this early (by the trigger loop) is still, for people, created "at" its time.
LEASE_AHEAD = timedelta(milliseconds=50)
#: How long a heartbeat round waits for a run locked by a report being recorded
#: before it gives way (see hydra.coordinator.heartbeats).
HEARTBEAT_LOCK_TIMEOUT = "50ms"


class LeaseStore(PreconditionStore):
    """The store, plus everything that touches leases."""

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[LeaseBatch]:
        """Several agent reports in one transaction: one commit for all of them."""
        async with self.transaction() as cur:
            yield LeaseBatch(self, cur)

    async def claim_runs(
        self, agent_id: str, labels: Mapping[str, str], limit: int, ttl: timedelta
    ) -> list[ClaimedRun]:
        """Lease up to `limit` due runs whose selector these labels satisfy."""
        if limit <= 0:
            return []
        async with self.transaction(dispatch_inline=False) as cur:
            return await self.claim_in(cur, agent_id, labels, limit, ttl)

    async def claim_in(
        self, cur: Cursor, agent_id: str, labels: Mapping[str, str], limit: int, ttl: timedelta
    ) -> list[ClaimedRun]:
        """`claim_runs` within a transaction of the caller's."""
        rows = await self.all(
            cur,
            "claim_runs",
            agent_id=agent_id,
            labels=Jsonb(dict(labels)),
            limit=limit,
            ttl=ttl,
            ahead=LEASE_AHEAD,
        )
        self.notify_runs_changed(cur, [str(row["id"]) for row in rows])
        if rows:  # other dispatchers may have lost runs to us under contention: retry
            self.notify_dispatch(cur)
        claimed = []
        for row in rows:
            spec = spec_of_version(row["task_id"], row["task_version"], row["task_spec"])
            claimed.append(
                ClaimedRun(
                    run_id=str(row["id"]),
                    lease_token=row["lease_token"],
                    task_name=row["task_name"],
                    task_spec=spec,
                    occurrence=row["occurrence"],
                    params=row["params"],
                    attempt=row["attempts_used"] + 1,
                    timezone=row["timezone"],
                    upstream=await self._upstream_outputs(cur, spec, row["occurrence"]),
                    not_before=row["not_before"],
                )
            )
        return claimed

    async def _upstream_outputs(
        self, cur: Cursor, spec: TaskSpec, occurrence: datetime
    ) -> dict[str, dict[str, Any]]:
        names = sorted(
            {t for trigger in spec.triggers if isinstance(trigger, After) for t in trigger.tasks}
        )
        if not names:
            return {}
        rows = await self.all(cur, "upstream_outputs", names=names, occurrence=occurrence)
        outputs: dict[str, dict[str, Any]] = {name: {} for name in names}
        outputs.update({r["name"]: r["outputs"] or {} for r in rows})
        return outputs

    async def record_preconditions(
        self,
        run_id: str,
        lease_token: int,
        *,
        ready: bool,
        verdicts: Sequence[PreconditionVerdict],
        now: datetime,
    ) -> None:
        """Record an agent's verdicts; when not ready, queue the run again after the
        poke interval, or end it once precondition_timeout has passed."""
        async with self.batch() as batch:
            await batch.record_preconditions(
                run_id, lease_token, ready=ready, verdicts=verdicts, now=now
            )

    async def release_lease(
        self, run_id: str, lease_token: int, *, reason: str, delay: timedelta = timedelta(0)
    ) -> bool:
        """Give a lease back before any attempt started; the run is queued again."""
        async with self.batch() as batch:
            return await batch.release_lease(run_id, lease_token, reason=reason, delay=delay)

    async def _release_lease(
        self, cur: Cursor, run_id: str, lease_token: int, *, reason: str, delay: timedelta
    ) -> bool:
        row = await self.one(
            cur,
            "release_lease",
            run_id=run_uuid(run_id),
            lease_token=lease_token,
            reason=reason,
            delay=delay,
        )
        if row is not None:
            self.notify_runs_changed(cur, [run_id])
            self.notify_dispatch(cur)
        return row is not None

    async def renew_leases(
        self,
        agent_id: str,
        leases: Sequence[LeaseKey],
        ttl: timedelta,
        *,
        draining: bool,
        coordinator_id: str,
    ) -> set[LeaseKey]:
        """Extend the agent's current leases among those listed; returns the renewed ones."""
        heartbeat = Heartbeat(agent_id=agent_id, leases=tuple(leases), draining=draining)
        renewed = await self.record_heartbeats([heartbeat], ttl, coordinator_id=coordinator_id)
        return renewed.get(agent_id, set())

    async def record_heartbeats(
        self, heartbeats: Sequence[Heartbeat], ttl: timedelta, *, coordinator_id: str
    ) -> dict[str, set[LeaseKey]]:
        """Several agents heard from, in one transaction of two statements: each agent
        is touched (and marked draining if it said so), each listed lease that is
        current and owned by the agent that listed it is extended by `ttl`.
        Returns the renewed leases by agent."""
        draining: dict[str, bool] = {}
        for beat in heartbeats:
            draining[beat.agent_id] = draining.get(beat.agent_id, False) or beat.draining
        agents = sorted(draining)
        # One entry per lease and agent, in a stable order.
        listed = sorted({(run, token, b.agent_id) for b in heartbeats for run, token in b.leases})
        async with self.transaction(dispatch_inline=False) as cur:
            await self.run_query(cur, "set_lock_timeout", timeout=HEARTBEAT_LOCK_TIMEOUT)
            await self.run_query(
                cur,
                "touch_agents",
                ids=agents,
                draining=[draining[agent] for agent in agents],
                coordinator_id=coordinator_id,
            )
            if not listed:
                return {}
            rows = await self.all(
                cur,
                "renew_leases",
                run_ids=[run_id for run_id, _, _ in listed],
                lease_tokens=[token for _, token, _ in listed],
                agent_ids=[agent for _, _, agent in listed],
                ttl=ttl,
            )
        renewed: dict[str, set[LeaseKey]] = {}
        for row in rows:
            renewed.setdefault(row["lease_owner"], set()).add((str(row["id"]), row["lease_token"]))
        return renewed

    async def reconcile_agent(
        self, agent_id: str, held: Sequence[LeaseKey], ttl: timedelta
    ) -> set[LeaseKey]:
        """On (re)connect: renew the held leases that are current, expire the ones the
        agent no longer holds (its process restarted). Returns the held leases that
        are not current: the agent must kill those attempts."""
        async with self.transaction() as cur:
            owned = {
                (str(r["id"]), r["lease_token"])
                for r in await self.all(cur, "leases_of_agent", agent_id=agent_id)
            }
            forgotten = owned - set(held)
            if forgotten:
                log.warning(
                    "agent %s no longer holds %d lease(s); expiring them", agent_id, len(forgotten)
                )
                await self.run_query(
                    cur,
                    "expire_leases",
                    run_ids=[r for r, _ in forgotten],
                    lease_tokens=[t for _, t in forgotten],
                )
        current = await self.renew_leases(
            agent_id, [h for h in held if h in owned], ttl, draining=False, coordinator_id=""
        )
        return set(held) - current

    async def start_attempt(
        self,
        run_id: str,
        lease_token: int,
        agent_id: str,
        argv: Sequence[str],
        started_at: datetime,
    ) -> bool:
        """LEASED -> RUNNING with a new attempt; False when the token is not current."""
        start = AttemptStart(
            run_id=run_id, lease_token=lease_token, argv=tuple(argv), started_at=started_at
        )
        async with self.batch() as batch:
            return bool(await batch.start_attempts(agent_id, [start]))

    async def _start_all(
        self, cur: Cursor, agent_id: str, starts: Sequence[AttemptStart]
    ) -> set[LeaseKey]:
        """`start_attempt` for several leases in one statement; the current ones."""
        rows = await self.all(
            cur,
            "start_attempts",
            agent_id=agent_id,
            run_ids=[run_uuid(start.run_id) for start in starts],
            lease_tokens=[start.lease_token for start in starts],
            argvs=[Jsonb(list(start.argv)) for start in starts],
            started_ats=[start.started_at for start in starts],
        )
        return {(str(row["run_id"]), row["lease_token"]) for row in rows}

    async def finish_attempt(self, report: AttemptReport) -> ReportVerdict:
        """Record how an attempt ended, if its lease is current; else refuse it."""
        try:
            async with self.batch() as batch:
                [verdict] = await batch.finish_attempts([report])
                return verdict
        except psycopg.errors.UniqueViolation:
            # The one-success index: never two SUCCEEDED attempts for a run.
            return ReportVerdict(accepted=False, reason=DUPLICATE_SUCCESS)

    async def _finish_all(
        self, cur: Cursor, reports: Sequence[AttemptReport]
    ) -> list[ReportVerdict]:
        """`finish_attempt` for several reports: their runs locked by one statement."""
        ids = list(dict.fromkeys(run_uuid(report.run_id) for report in reports))
        locked = {str(row["id"]): row for row in await self.all(cur, "lock_runs", ids=ids)}
        verdicts = []
        for report in reports:
            row = locked.pop(run_uuid(report.run_id), None)
            if row is not None:
                verdicts.append(await self._finish_locked(cur, report, row))
            else:  # unknown, or a second report on the run: what the first did is read again
                verdicts.append(await self._finish(cur, report))
        return verdicts

    async def _finish(self, cur: Cursor, report: AttemptReport) -> ReportVerdict:
        row = await self.one(cur, "lock_runs", ids=[run_uuid(report.run_id)])
        if row is None:
            return ReportVerdict(accepted=False, reason="unknown run")
        return await self._finish_locked(cur, report, row)

    async def _finish_locked(self, cur: Cursor, report: AttemptReport, row: Row) -> ReportVerdict:
        state = RunState(row["state"])
        if row["lease_token"] == report.lease_token and not state.active:
            return ReportVerdict(accepted=False, reason=f"run is already {state.value}")
        if row["lease_token"] != report.lease_token or not state.active:
            return ReportVerdict(
                accepted=False,
                reason=f"stale lease {report.lease_token}: run is {state.value} "
                f"under lease {row['lease_token']}",
            )
        if state is RunState.LEASED:  # AttemptStarted never arrived (spawn failed, or lost)
            start = AttemptStart(
                run_id=report.run_id,
                lease_token=report.lease_token,
                argv=report.argv,
                started_at=report.started_at,
            )
            await self._start_all(cur, report.agent_id, [start])
        if report.outcome == "SUCCEEDED":
            # Neither statement is waited for (pipeline mode): a success costs
            # one round trip, the lock, when no task runs after this one.
            await self.run_query(cur, "finish_attempt", **_attempt_end(report))
            await self.run_query(
                cur,
                "succeed_run",
                run_id=row["id"],
                lease_token=report.lease_token,
                outputs=_outputs(report.outputs_json),
            )
            await self._after_terminal(cur, row)
        else:
            await self._fail_or_requeue(
                cur,
                row,
                report.lease_token,
                reason=failure_reason(await self._close_attempt(cur, report), report),
                backoff_factor=_backoff_factor(report),
            )
        return ReportVerdict(accepted=True)

    async def _after_terminal(self, cur: Cursor, row: Row) -> None:
        if row["has_dependents"]:
            await self.after_terminal(cur, row["task_name"], row["occurrence"], row["timezone"])

    async def _fail_or_requeue(
        self, cur: Cursor, row: Row, lease_token: int, *, reason: str, backoff_factor: float
    ) -> None:
        outcome = await self.one(
            cur,
            "fail_or_requeue_run",
            run_id=row["id"],
            lease_token=lease_token,
            reason=reason,
            backoff_factor=backoff_factor,
        )
        if outcome is not None and outcome["state"] == RunState.FAILED.value:
            await self._after_terminal(cur, row)

    async def _close_attempt(self, cur: Cursor, report: AttemptReport) -> int:
        """Ends the running attempt; its number."""
        row = await self.one(cur, "finish_attempt", **_attempt_end(report))
        assert row is not None, "a current RUNNING lease always has a RUNNING attempt"
        return int(row["number"])

    async def append_output(
        self, run_id: str, lease_token: int, stream: int, data: bytes, *, limit: int
    ) -> None:
        """Store output of the attempt under this lease, keeping at most `limit` bytes."""
        async with self.batch() as batch:
            await batch.append_output(run_id, lease_token, stream, data, limit=limit)

    async def _append_output(
        self, cur: Cursor, run_id: str, lease_token: int, stream: int, data: bytes, limit: int
    ) -> None:
        row = await self.one(
            cur,
            "append_output",
            run_id=run_uuid(run_id),
            lease_token=lease_token,
            stream=stream,
            data=data,
        )
        if row is None:
            return
        if row["output_bytes"] > limit:
            await self.run_query(
                cur, "prune_output", run_id=run_id, attempt=row["number"], limit=limit
            )
        await self.run_query(cur, "notify_output", run_id=run_id)

    async def reap_expired(
        self, limit: int = 100, *, restart_grace: timedelta = timedelta(0)
    ) -> int:
        """Expired leases: a started attempt is LOST and the run retried or FAILED;
        a lease with no attempt just goes back to the queue. Nothing is reaped within
        `restart_grace` of a database restart."""
        async with self.transaction() as cur:
            rows = await self.all(
                cur, "claim_expired_leases", limit=limit, restart_grace=restart_grace
            )
            for row in rows:
                await self._reap(cur, row)
            if rows:
                self.notify_dispatch(cur)
        return len(rows)

    async def _reap(self, cur: Cursor, row: dict[str, Any]) -> None:
        run_id, token, agent = str(row["id"]), row["lease_token"], row["lease_owner"]
        if row["state"] == RunState.LEASED.value:
            await self.run_query(
                cur,
                "release_lease",
                run_id=run_id,
                lease_token=token,
                delay=timedelta(0),
                reason=f"lease on agent {agent} expired before the attempt started",
            )
        else:
            number = row["attempts_used"]
            message = f"lease expired: agent {agent} stopped heartbeating"
            await self.run_query(
                cur, "lose_attempt", run_id=run_id, lease_token=token, message=message
            )
            await self._fail_or_requeue(
                cur, row, token, reason=f"attempt {number} lost: {message}", backoff_factor=0.0
            )
        log.warning("lease %s of run %s on agent %s expired", token, run_id, agent)
        self.notify_runs_changed(cur, [run_id])

    async def runs_due(self) -> bool:
        """Whether any queued run is due (or within LEASE_AHEAD of it)."""
        async with self.transaction(dispatch_inline=False) as cur:
            return await self.runs_due_in(cur)

    async def runs_due_in(self, cur: Cursor) -> bool:
        """`runs_due` within a transaction of the caller's."""
        row = await self.one(cur, "queued_runs_due", ahead=LEASE_AHEAD)
        return bool(row and row["due"])

    async def next_queued_due(self) -> datetime | None:
        """When the earliest queued run becomes due."""
        async with self.transaction() as cur:
            row = await self.one(cur, "next_queued_due", ahead=LEASE_AHEAD)
        return row["not_before"] if row else None

    async def next_lease_expiry(self) -> datetime | None:
        """The earliest lease expiry."""
        async with self.transaction() as cur:
            row = await self.one(cur, "next_lease_expiry")
        return row["lease_expires_at"] if row else None

    async def connect_agent(
        self,
        *,
        agent_id: str,
        hostname: str,
        labels: Mapping[str, str],
        capacity: int,
        version: str,
        draining: bool,
        coordinator_id: str,
    ) -> None:
        """Record an agent as connected to this coordinator."""
        async with self.transaction() as cur:
            await self.run_query(
                cur,
                "upsert_agent",
                id=agent_id,
                hostname=hostname,
                labels=Jsonb(dict(labels)),
                capacity=capacity,
                version=version,
                state="draining" if draining else "connected",
                coordinator_id=coordinator_id,
            )

    async def disconnect_agent(self, agent_id: str, coordinator_id: str) -> None:
        """The agent's stream to this coordinator ended."""
        async with self.transaction() as cur:
            await self.run_query(
                cur, "disconnect_agent", id=agent_id, coordinator_id=coordinator_id
            )


#: Why a report is refused when its run already succeeded under another attempt.
DUPLICATE_SUCCESS = "run already has a successful attempt"


def failure_reason(number: int, report: AttemptReport) -> str:
    """Why a run failed or is being retried, for people."""
    if report.outcome == "TIMED_OUT":
        what = "timed out"
    elif report.outcome == "FENCED":
        what = "was killed by its agent, which could not renew the lease"
    elif report.outcome == "CANCELLED":
        what = "was cancelled by its agent"
    elif report.signal is not None:
        what = f"was killed by signal {report.signal}"
    elif report.exit_code is not None:
        what = f"failed with exit code {report.exit_code}"
    else:
        what = "failed"
    detail = f": {report.message}" if report.message else ""
    return f"attempt {number} {what}{detail}"


def _backoff_factor(report: AttemptReport) -> float:
    # A lost or fenced attempt is not the command's fault: retry at once elsewhere.
    return 0.0 if report.outcome == "FENCED" else 1.0


def _outputs(outputs_json: str) -> Jsonb | None:
    return Jsonb(json.loads(outputs_json)) if outputs_json else None


def _attempt_end(report: AttemptReport) -> dict[str, Any]:
    """The parameters of `finish_attempt`."""
    return {
        "run_id": run_uuid(report.run_id),
        "lease_token": report.lease_token,
        "state": _ATTEMPT_STATE[report.outcome].value,
        "exit_code": report.exit_code,
        "signal": report.signal,
        "finished_at": report.finished_at,
        "message": report.message,
        "argv": list(report.argv),
    }
