"""Attempts: started, ended, their output. An agent's reports are recorded here,
each guarded by the run's current lease token; a run that ends moves its
dependents on. Every function works in the caller's transaction."""

from __future__ import annotations

import base64
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
    """Record how attempts ended, each if its lease is current, in a fixed number of
    statements whatever the batch's size: one locks its runs (in id order), one starts
    the attempts whose start never arrived, one ends the others with their output's
    tails (``finish_attempts``). A second report on a run is judged on what the first
    did, in a round of its own (its run locked again). The dependents of the runs that
    ended are locked by one statement, then resolved run by run (statements per run
    that has dependents). A second success of a run raises UniqueViolation (the
    one-success index)."""
    ids = [run_uuid(report.run_id) for report in reports]
    verdicts: list[ReportVerdict] = [ReportVerdict(accepted=False)] * len(reports)
    for number, positions in enumerate(_rounds(ids)):
        # The first round locks every run; a later one reads again what the first did.
        round_ids = list(dict.fromkeys(ids)) if number == 0 else [ids[p] for p in positions]
        locked = {str(row["id"]): row for row in await tx.all("lock_runs", ids=round_ids)}
        batch = [(reports[p], locked.get(ids[p])) for p in positions]
        for position, verdict in zip(positions, await _finish_round(tx, batch), strict=True):
            verdicts[position] = verdict
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


def _rounds(ids: Sequence[str]) -> list[list[int]]:
    """Positions of the reports by round: the first report on each run, then the second..."""
    rounds: list[list[int]] = []
    seen: dict[str, int] = {}
    for position, run_id in enumerate(ids):
        number = seen[run_id] = seen.get(run_id, -1) + 1
        if number == len(rounds):
            rounds.append([])
        rounds[number].append(position)
    return rounds


async def _finish_round(
    tx: Transaction, batch: Sequence[tuple[AttemptReport, Row | None]]
) -> list[ReportVerdict]:
    """Reports on distinct runs, each with its locked run (None: unknown)."""
    verdicts = [_refusal(report, row) for report, row in batch]
    current = [
        (report, row)
        for (report, row), verdict in zip(batch, verdicts, strict=True)
        if verdict is None and row is not None
    ]
    await _start_unstarted(tx, [(r, row) for r, row in current if row["state"] == "LEASED"])
    if current:
        states = await _finish_attempts(tx, [report for report, _ in current])
        # Every run of the round has ended before any dependent is resolved: a
        # dependent of two of them is resolved by the first, seeing both ended.
        over = []
        for (report, row), state in zip(current, states, strict=True):
            if _ended(tx, report, row, state) and row["has_dependents"]:
                over.append((row["task_name"], runs.Occurrence(row["occurrence"], row["timezone"])))
        await runs.after_terminals(tx, over)
    return [verdict or ReportVerdict(accepted=True) for verdict in verdicts]


async def _finish_attempts(tx: Transaction, reports: Sequence[AttemptReport]) -> list[str]:
    """End current RUNNING leases in one statement; the new state of each run."""
    if all(report.outcome is AttemptOutcome.SUCCEEDED for report in reports):
        # Not waited for (pipeline mode): a batch of successes costs one round trip,
        # the lock, when no task runs after theirs.
        await tx.execute("finish_attempts", **_ends(reports))
        return [RunState.SUCCEEDED.value] * len(reports)
    return [row["state"] for row in await tx.all("finish_attempts", **_ends(reports))]


def _refusal(report: AttemptReport, row: Row | None) -> ReportVerdict | None:
    """Why a report on a locked run is refused; None if its lease is current."""
    if row is None:
        return ReportVerdict(accepted=False, reason="unknown run")
    state = RunState(row["state"])
    if row["lease_token"] == report.lease_token and not state.active:
        return ReportVerdict(accepted=False, reason=f"run is already {state.value}")
    if row["lease_token"] != report.lease_token or not state.active:
        return ReportVerdict(
            accepted=False,
            reason=f"stale lease {report.lease_token}: run is {state.value} "
            f"under lease {row['lease_token']}",
        )
    return None


async def _start_unstarted(tx: Transaction, leased: Sequence[tuple[AttemptReport, Row]]) -> None:
    """LEASED -> RUNNING for attempts whose AttemptStarted never arrived (spawn failed,
    or lost): one statement per agent (a batch comes from one)."""
    by_agent: dict[str, list[AttemptStart]] = {}
    for report, _ in leased:
        by_agent.setdefault(report.agent_id, []).append(
            AttemptStart(
                run_id=report.run_id,
                lease_token=report.lease_token,
                argv=report.argv,
                started_at=report.started_at,
            )
        )
    for agent_id, begun in by_agent.items():
        await start(tx, agent_id, begun)


def _ended(tx: Transaction, report: AttemptReport, row: Row, state: str) -> bool:
    """Count a recorded end; whether its run is over (its dependents learn it)."""
    seconds = (report.finished_at - report.started_at).total_seconds()
    tx.metrics.attempt_finished(row["task_name"], report.outcome.value, seconds)
    if report.outcome is AttemptOutcome.SUCCEEDED:
        tx.metrics.run_finished(row["task_name"], RunState.SUCCEEDED.value)
        return True
    if state == RunState.FAILED.value:
        tx.metrics.run_finished(row["task_name"], RunState.FAILED.value)
        return True
    return False


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


async def append_output(
    tx: Transaction, run_id: str, lease_token: int, stream: int, data: bytes, *, limit: int
) -> None:
    """Store output of the running attempt under this lease: its head, the first `limit`
    bytes (both streams together); what comes later is dropped. The end of the output
    arrives with the attempt's report (`finish_attempts`)."""
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


def _failure(report: AttemptReport) -> str:
    """Why a run failed or is being retried, for people: the reason without its
    "attempt <number> " (``finish_attempts`` adds it), e.g. "failed with exit code 1"."""
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
    return f"{what}{detail}"


def _backoff_factor(report: AttemptReport) -> float:
    # A lost or fenced attempt is not the command's fault: retry at once elsewhere.
    return 0.0 if report.outcome is AttemptOutcome.FENCED else 1.0


def _ends(reports: Sequence[AttemptReport]) -> dict[str, Any]:
    """The parameters of `finish_attempts`."""
    return {
        "reports": Jsonb([_end(position, report) for position, report in enumerate(reports)]),
        "tails": Jsonb(
            [
                {
                    "lease_token": report.lease_token,
                    "stream": tail.stream,
                    "total": tail.total_bytes,
                    "data": base64.b64encode(tail.data).decode("ascii"),
                }
                for report in reports
                for tail in report.output_tails
                if tail.total_bytes > 0
            ]
        ),
    }


def _end(position: int, report: AttemptReport) -> dict[str, Any]:
    end = {
        "position": position,
        "run_id": run_uuid(report.run_id),
        "lease_token": report.lease_token,
        "succeeded": report.outcome is AttemptOutcome.SUCCEEDED,
        "state": report.outcome.attempt_state.value,
        "exit_code": report.exit_code,
        "signal": report.signal,
        "finished_at": report.finished_at.isoformat(),
        "message": report.message,
        "argv": list(report.argv),
        "failure": _failure(report),
        "backoff_factor": _backoff_factor(report),
        "notify_as": report.run_id if any(t.total_bytes > 0 for t in report.output_tails) else None,
    }
    if report.outputs_json:  # absent, not JSON null: the run's outputs are NULL
        end["outputs"] = json.loads(report.outputs_json)
    return end
