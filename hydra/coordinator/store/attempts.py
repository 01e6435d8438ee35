"""Attempts: started, ended, their output. An agent's reports are recorded here,
each guarded by the run's current lease token; a run that ends moves its
dependents on. Every function works in the caller's transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from hydra.coordinator.store import runs
from hydra.coordinator.store.records import AttemptReport, AttemptStart, ReportVerdict
from hydra.coordinator.store.runs import run_uuid
from hydra.coordinator.store.transaction import Database, Row, Transaction
from hydra.domain import AttemptOutcome, LeaseKey, RunState

#: Why a report is refused when its run already succeeded under another attempt.
DUPLICATE_SUCCESS = "run already has a successful attempt"


async def start(tx: Transaction, agent_id: str, starts: Sequence[AttemptStart]) -> set[LeaseKey]:
    """LEASED -> RUNNING with a new attempt, for several leases in one statement.
    Returns the leases that were current. Of the others, a start under the token
    of a run cancelled meanwhile is recorded as a CANCELLED attempt (its process
    did start); the rest changed nothing."""
    rows = await tx.all(
        "start_attempts",
        agent_id=agent_id,
        run_ids=[run_uuid(each.run_id) for each in starts],
        lease_tokens=[each.lease_token for each in starts],
        argvs=[Jsonb(list(each.argv)) for each in starts],
        started_ats=[each.started_at for each in starts],
    )
    current = {LeaseKey(str(row["run_id"]), row["lease_token"]) for row in rows if row["current"]}
    tx.runs_changed([str(row["run_id"]) for row in rows])
    for row in rows:
        if row["current"] and row["number"] == 1:  # retries wait for their backoff: no schedule lag
            tx.metrics.attempt_started(row["task_name"], row["lag_seconds"])
    return current


async def finish(tx: Transaction, reports: Sequence[AttemptReport]) -> list[ReportVerdict]:
    """Record how attempts ended, each if its lease is current; their runs are locked
    by one statement, in id order. A second success of a run raises UniqueViolation
    (the one-success index) when the transaction commits."""
    ids = list(dict.fromkeys(run_uuid(report.run_id) for report in reports))
    locked = {str(row["id"]): row for row in await tx.all("lock_runs", ids=ids)}
    verdicts = []
    for report in reports:
        row = locked.pop(run_uuid(report.run_id), None)
        if row is None:  # unknown, or a second report on the run: what the first did is read again
            row = await tx.one("lock_runs", ids=[run_uuid(report.run_id)])
        if row is None:
            verdicts.append(ReportVerdict(accepted=False, reason="unknown run"))
        else:
            verdicts.append(await _finish_locked(tx, report, row))
    accepted = [r.run_id for r, v in zip(reports, verdicts, strict=True) if v.accepted]
    if accepted:
        tx.runs_changed(accepted)
        tx.work_available()
    return verdicts


async def finish_alone(db: Database, report: AttemptReport) -> ReportVerdict:
    """`finish` for one report in a transaction of its own, the one-success index's
    refusal included."""
    try:
        async with db.transaction() as tx:
            [verdict] = await finish(tx, [report])
            return verdict
    except psycopg.errors.UniqueViolation:
        return ReportVerdict(accepted=False, reason=DUPLICATE_SUCCESS)


async def _finish_locked(tx: Transaction, report: AttemptReport, row: Row) -> ReportVerdict:
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
        begun = AttemptStart(
            run_id=report.run_id,
            lease_token=report.lease_token,
            argv=report.argv,
            started_at=report.started_at,
        )
        await start(tx, report.agent_id, [begun])
    await _append_tails(tx, report)
    seconds = (report.finished_at - report.started_at).total_seconds()
    tx.metrics.attempt_finished(row["task_name"], report.outcome.value, seconds)
    if report.outcome is AttemptOutcome.SUCCEEDED:
        # Neither statement is waited for (pipeline mode): a success costs
        # one round trip, the lock, when no task runs after this one.
        await tx.execute("finish_attempt", **_attempt_end(report))
        await tx.execute(
            "succeed_run",
            run_id=row["id"],
            lease_token=report.lease_token,
            outputs=_outputs(report.outputs_json),
        )
        tx.metrics.run_finished(row["task_name"], RunState.SUCCEEDED.value)
        await _after_terminal(tx, row)
    else:
        await fail_or_requeue(
            tx,
            row,
            report.lease_token,
            reason=failure_reason(await _close_attempt(tx, report), report),
            backoff_factor=_backoff_factor(report),
        )
    return ReportVerdict(accepted=True)


async def fail_or_requeue(
    tx: Transaction, row: Row, lease_token: int, *, reason: str, backoff_factor: float
) -> None:
    """An attempt of a locked run failed: queue it again (after its backoff times
    `backoff_factor`) if attempts remain, else the run FAILED."""
    outcome = await tx.one(
        "fail_or_requeue_run",
        run_id=row["id"],
        lease_token=lease_token,
        reason=reason,
        backoff_factor=backoff_factor,
    )
    if outcome is not None and outcome["state"] == RunState.FAILED.value:
        tx.metrics.run_finished(row["task_name"], RunState.FAILED.value)
        await _after_terminal(tx, row)


async def _after_terminal(tx: Transaction, row: Row) -> None:
    if row["has_dependents"]:
        await runs.after_terminal(tx, row["task_name"], row["occurrence"], row["timezone"])


async def _close_attempt(tx: Transaction, report: AttemptReport) -> int:
    """Ends the running attempt; its number."""
    row = await tx.one("finish_attempt", **_attempt_end(report))
    assert row is not None, "a current RUNNING lease always has a RUNNING attempt"
    return int(row["number"])


async def append_output(
    tx: Transaction, run_id: str, lease_token: int, stream: int, data: bytes, *, limit: int
) -> None:
    """Store output of the running attempt under this lease: its head, the first `limit`
    bytes (both streams together); what comes later is dropped. The end of the output
    arrives with the attempt's report (`_append_tails`)."""
    row = await tx.one(
        "append_output",
        run_id=run_uuid(run_id),
        lease_token=lease_token,
        stream=stream,
        data=data,
        limit=limit,
    )
    if row is not None:
        await tx.execute("notify_output", run_id=run_id)


async def _append_tails(tx: Transaction, report: AttemptReport) -> None:
    """After the head stored of each stream: a marker for the bytes dropped, if any,
    then what the head lacks of the true tail the agent sent (none if it fit)."""
    tails = [tail for tail in report.output_tails if tail.total_bytes > 0]
    if not tails:
        return
    await tx.execute(
        "append_output_tail",
        lease_token=report.lease_token,
        streams=[tail.stream for tail in tails],
        totals=[tail.total_bytes for tail in tails],
        datas=[tail.data for tail in tails],
    )
    await tx.execute("notify_output", run_id=report.run_id)


def failure_reason(number: int, report: AttemptReport) -> str:
    """Why a run failed or is being retried, for people."""
    if report.outcome is AttemptOutcome.TIMED_OUT:
        what = "timed out"
    elif report.outcome is AttemptOutcome.FENCED:
        what = "was killed by its agent, which could not renew the lease"
    elif report.outcome is AttemptOutcome.CANCELLED:
        what = "was cancelled by its agent"
    elif report.signal is not None:
        what = f"was killed by signal {report.signal}"
    elif report.exit_code:  # not 0: an attempt can fail after exiting 0 (bad outputs)
        what = f"failed with exit code {report.exit_code}"
    else:
        what = "failed"
    detail = f": {report.message}" if report.message else ""
    return f"attempt {number} {what}{detail}"


def _backoff_factor(report: AttemptReport) -> float:
    # A lost or fenced attempt is not the command's fault: retry at once elsewhere.
    return 0.0 if report.outcome is AttemptOutcome.FENCED else 1.0


def _outputs(outputs_json: str) -> Jsonb | None:
    return Jsonb(json.loads(outputs_json)) if outputs_json else None


def _attempt_end(report: AttemptReport) -> dict[str, Any]:
    """The parameters of `finish_attempt`."""
    return {
        "run_id": run_uuid(report.run_id),
        "lease_token": report.lease_token,
        "state": report.outcome.attempt_state.value,
        "exit_code": report.exit_code,
        "signal": report.signal,
        "finished_at": report.finished_at,
        "message": report.message,
        "argv": list(report.argv),
    }
