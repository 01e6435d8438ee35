"""Leases: claim, release, renew, reconcile and expire them. Every change is
guarded by the run's current fencing token (compare-and-set), so a message
that carries an old token changes nothing. Every function works in the
caller's transaction."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from hydra.coordinator.store import attempts
from hydra.coordinator.store.records import LEASE_AHEAD, ClaimedRun, Heartbeat
from hydra.coordinator.store.runs import run_uuid
from hydra.coordinator.store.transaction import Row, Transaction
from hydra.domain import After, LeaseKey, RunState, TaskSpec

log = logging.getLogger("hydra.coordinator.leases")

#: How long a heartbeat round waits for a run locked by a report being recorded
#: before it gives way (see hydra.coordinator.loops.heartbeats).
HEARTBEAT_LOCK_TIMEOUT = "50ms"


async def claim(
    tx: Transaction, agent_id: str, labels: Mapping[str, str], limit: int, ttl: timedelta
) -> list[ClaimedRun]:
    """Lease up to `limit` due runs (or due within LEASE_AHEAD) whose selector these
    labels satisfy, with FOR UPDATE SKIP LOCKED: coordinators never lease a run twice."""
    if limit <= 0:
        return []
    rows = await tx.all(
        "claim_runs",
        agent_id=agent_id,
        labels=Jsonb(dict(labels)),
        limit=limit,
        ttl=ttl,
        ahead=LEASE_AHEAD,
    )
    tx.runs_changed([str(row["id"]) for row in rows])
    if rows:  # other dispatchers may have lost runs to us under contention: retry
        tx.work_available()
    claimed = []
    for row in rows:
        spec = tx.spec(row["task_id"], row["task_version"], row["task_spec"])
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
                upstream=await _upstream_outputs(tx, spec, row["occurrence"]),
                not_before=row["not_before"],
            )
        )
    return claimed


async def _upstream_outputs(
    tx: Transaction, spec: TaskSpec, occurrence: datetime
) -> dict[str, dict[str, Any]]:
    names = sorted(
        {t for trigger in spec.triggers if isinstance(trigger, After) for t in trigger.tasks}
    )
    if not names:
        return {}
    rows = await tx.all("upstream_outputs", names=names, occurrence=occurrence)
    outputs: dict[str, dict[str, Any]] = {name: {} for name in names}
    outputs.update({r["name"]: r["outputs"] or {} for r in rows})
    return outputs


async def release(
    tx: Transaction, run_id: str, lease_token: int, *, reason: str, delay: timedelta = timedelta(0)
) -> bool:
    """Give a lease back before any attempt started; the run is queued again
    after `delay`. False when the token is not current."""
    row = await tx.one(
        "release_lease",
        run_id=run_uuid(run_id),
        lease_token=lease_token,
        reason=reason,
        delay=delay,
    )
    if row is not None:
        tx.runs_changed([run_id])
        tx.work_available()
    return row is not None


async def record_heartbeats(
    tx: Transaction, heartbeats: Sequence[Heartbeat], ttl: timedelta, *, coordinator_id: str
) -> dict[str, set[LeaseKey]]:
    """Several agents heard from, in two statements: each agent is touched (and marked
    draining if it said so), each listed lease that is current and owned by the agent
    that listed it is extended by `ttl`. Returns the renewed leases by agent.

    Its statements wait at most HEARTBEAT_LOCK_TIMEOUT for a row lock, so that a
    round never deadlocks with report batches (it is tried again instead)."""
    draining: dict[str, bool] = {}
    for beat in heartbeats:
        draining[beat.agent_id] = draining.get(beat.agent_id, False) or beat.draining
    agents = sorted(draining)
    # One entry per lease and agent, in a stable order.
    listed = sorted({(run, token, b.agent_id) for b in heartbeats for run, token in b.leases})
    await tx.execute("set_lock_timeout", timeout=HEARTBEAT_LOCK_TIMEOUT)
    await tx.execute(
        "touch_agents",
        ids=agents,
        draining=[draining[agent] for agent in agents],
        coordinator_id=coordinator_id,
    )
    if not listed:
        return {}
    rows = await tx.all(
        "renew_leases",
        run_ids=[run_id for run_id, _, _ in listed],
        lease_tokens=[token for _, token, _ in listed],
        agent_ids=[agent for _, _, agent in listed],
        ttl=ttl,
    )
    renewed: dict[str, set[LeaseKey]] = {}
    for row in rows:
        key = LeaseKey(str(row["id"]), row["lease_token"])
        renewed.setdefault(row["lease_owner"], set()).add(key)
    return renewed


async def renew(
    tx: Transaction,
    agent_id: str,
    leases: Sequence[LeaseKey],
    ttl: timedelta,
    *,
    draining: bool = False,
    coordinator_id: str = "",
) -> set[LeaseKey]:
    """One agent's heartbeat: its current leases among those listed, renewed."""
    heartbeat = Heartbeat(agent_id=agent_id, leases=tuple(leases), draining=draining)
    renewed = await record_heartbeats(tx, [heartbeat], ttl, coordinator_id=coordinator_id)
    return renewed.get(agent_id, set())


async def reconcile(
    tx: Transaction, agent_id: str, held: Sequence[LeaseKey], ttl: timedelta
) -> set[LeaseKey]:
    """On (re)connect: renew the held leases that are current, expire the ones the
    agent no longer holds (its process restarted). Returns the held leases that
    are not current: the agent must kill those attempts."""
    owned = {
        LeaseKey(str(r["id"]), r["lease_token"])
        for r in await tx.all("leases_of_agent", agent_id=agent_id)
    }
    forgotten = owned - set(held)
    if forgotten:
        log.warning("agent %s no longer holds %d lease(s); expiring them", agent_id, len(forgotten))
        await tx.execute(
            "expire_leases",
            run_ids=[r for r, _ in forgotten],
            lease_tokens=[t for _, t in forgotten],
        )
    current = await renew(tx, agent_id, [h for h in held if h in owned], ttl)
    return set(held) - current


async def reap_expired(
    tx: Transaction, limit: int = 100, *, restart_grace: timedelta = timedelta(0)
) -> int:
    """Expired leases: a started attempt is LOST and the run retried or FAILED;
    a lease with no attempt just goes back to the queue. Nothing is reaped within
    `restart_grace` of a database restart. Returns how many were reaped."""
    rows = await tx.all("claim_expired_leases", limit=limit, restart_grace=restart_grace)
    for row in rows:
        await _reap(tx, row)
    if rows:
        tx.work_available()
    tx.metrics.leases_expired(len(rows))
    return len(rows)


async def _reap(tx: Transaction, row: Row) -> None:
    run_id, token, agent = str(row["id"]), row["lease_token"], row["lease_owner"]
    if row["state"] == RunState.LEASED.value:
        await tx.execute(
            "release_lease",
            run_id=run_id,
            lease_token=token,
            delay=timedelta(0),
            reason=f"lease on agent {agent} expired before the attempt started",
        )
    else:
        number = row["attempts_used"]
        message = f"lease expired: agent {agent} stopped heartbeating"
        await tx.execute("lose_attempt", run_id=run_id, lease_token=token, message=message)
        tx.metrics.attempt_finished(row["task_name"], "LOST", None)
        await attempts.fail_or_requeue(
            tx, row, token, reason=f"attempt {number} lost: {message}", backoff_factor=0.0
        )
    log.warning("lease %s of run %s on agent %s expired", token, run_id, agent)
    tx.runs_changed([run_id])


async def runs_due(tx: Transaction) -> bool:
    """Whether any queued run is due (or within LEASE_AHEAD of it)."""
    row = await tx.one("queued_runs_due", ahead=LEASE_AHEAD)
    return bool(row and row["due"])


async def next_queued_due(tx: Transaction) -> datetime | None:
    """When the earliest queued run becomes due."""
    row = await tx.one("next_queued_due", ahead=LEASE_AHEAD)
    return row["not_before"] if row else None


async def next_expiry(tx: Transaction) -> datetime | None:
    """The earliest lease expiry."""
    row = await tx.one("next_lease_expiry")
    return row["lease_expires_at"] if row else None
