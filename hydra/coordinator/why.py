"""Why: what became of one occurrence of a task, as facts (``RunService/Why``).

An occurrence with a run is explained by the run's state: the attempt it is at
and how the last one ended, the preconditions that hold it, the runs holding
its task's slots, the agents that could take it, the upstream run that failed.
An occurrence without one is explained by the record of its drop
(``hydra_skipped_occurrences``), or by the task's triggers: not an occurrence of
any, not due yet, the task paused, or before the task existed. Read in one
transaction; nothing here changes anything.
"""

from __future__ import annotations

from datetime import datetime

from hydra.coordinator import why_missing
from hydra.coordinator.store import Row, Transaction, agents, occurrences, runs, tasks
from hydra.domain import Attempt, Run, RunState, Task
from hydra.occurrences import Explanation, Fact, FactKind


async def explain(
    tx: Transaction, task_name: str, occurrence: datetime, now: datetime
) -> Explanation:
    """Explain `occurrence` of the live task `task_name` (NOT_FOUND if unknown)."""
    task_id, task = await tasks.task_ref(tx, task_name)
    run_id = await occurrences.run_id_at(tx, task_id, occurrence)
    if run_id is None:
        facts = await why_missing.facts(tx, task_id, task, occurrence, now)
        return Explanation(task=task_name, occurrence=occurrence, run=None, facts=tuple(facts))
    run = await runs.get_run(tx, run_id)
    facts = [_run_fact(run), *await _state_facts(tx, task_id, task, run, now)]
    return Explanation(task=task_name, occurrence=occurrence, run=run, facts=tuple(facts))


def _run_fact(run: Run) -> Fact:
    return Fact(
        kind=FactKind.RUN,
        message=f"run {run.id} ({run.cause}) is {run.state.value}",
        ids={"run_id": run.id},
    )


async def _state_facts(
    tx: Transaction, task_id: int, task: Task, run: Run, now: datetime
) -> list[Fact]:
    if run.state is RunState.QUEUED:
        return await _queued_facts(tx, task_id, task, run, now)
    if run.state is RunState.LEASED:
        return [*_precondition_facts(run), _leased_fact(run)]
    if run.state is RunState.SKIPPED:
        return [_reason_fact(run), *await _skipped_facts(tx, task_id, task, run)]
    facts = [_attempt_fact(run, run.attempts[-1])] if run.attempts else []
    # A failed attempt's reason repeats what the attempt fact says.
    if run.reason and (run.state is RunState.CANCELLED or not run.attempts):
        facts.append(_reason_fact(run))
    return facts


async def _queued_facts(
    tx: Transaction, task_id: int, task: Task, run: Run, now: datetime
) -> list[Fact]:
    facts: list[Fact] = []
    if run.attempts_used > 0 and run.attempts:
        facts += [_attempt_fact(run, run.attempts[-1]), _retrying_fact(run, now)]
    facts += _precondition_facts(run)
    if run.not_before > now and run.attempts_used == 0 and run.precondition_checks == 0:
        facts.append(_not_before_fact(run))
    if run.not_before <= now:
        facts += await _waiting_facts(tx, task_id, task, run)
    return facts


async def _waiting_facts(tx: Transaction, task_id: int, task: Task, run: Run) -> list[Fact]:
    """A due queued run waits for a slot of its task, or for an agent."""
    limit = task.spec.concurrency.max_active_runs
    ahead = await occurrences.slot_holders(tx, task_id, run.id, run.occurrence)
    if ahead and ahead[0]["ahead"] >= limit:
        return [_overlap_fact(ahead, limit, "is waiting behind")]
    return [await _agent_fact(tx, run)]


def _overlap_fact(holders: list[Row], limit: int, verb: str) -> Fact:
    shown = holders[: occurrences.SLOT_HOLDERS_SHOWN]
    named = ", ".join(f"run {h['id']} ({h['state']})" for h in shown)
    total = int(holders[0].get("ahead", len(holders))) if holders else 0
    named += f" and {total - len(shown)} more" if total > len(shown) else ""
    return Fact(
        kind=FactKind.OVERLAP,
        message=f"it {verb} {named}: max_active_runs {limit}",
        ids={"run_id": str(shown[0]["id"])} if shown else {},
    )


async def _agent_fact(tx: Transaction, run: Run) -> Fact:
    selector = dict((await occurrences.pinned_spec(tx, run.id)).selector)
    connected = await agents.list_agents(tx, include_disconnected=False)
    matching = [a for a in connected if selector.items() <= dict(a.labels).items()]
    wanted = f"labels {selector}" if selector else "any labels"
    if not matching:
        message = f"it is due and waits for an agent: no connected agent has {wanted}"
    elif all(a.active_runs >= a.capacity or a.state == "draining" for a in matching):
        names = ", ".join(a.id for a in matching)
        message = (
            f"it is due and waits for a free slot: every agent with {wanted} is busy ({names})"
        )
    else:
        message = f"it is due and an agent with {wanted} has a free slot: it is about to be leased"
    return Fact(kind=FactKind.AGENT, message=message)


def _attempt_fact(run: Run, attempt: Attempt) -> Fact:
    of = f"attempt {attempt.number} of {run.max_attempts}"
    ids = {"agent_id": attempt.agent} if attempt.agent else {}
    if attempt.finished_at is None:
        message = f"{of} is running on agent {attempt.agent} since {attempt.started_at.isoformat()}"
        return Fact(kind=FactKind.ATTEMPT, message=message, ids=ids)
    how = _ending(attempt)
    message = f"{of} {attempt.state.value.lower()} on agent {attempt.agent}{how}"
    return Fact(kind=FactKind.ATTEMPT, message=message, ids=ids)


def _ending(attempt: Attempt) -> str:
    if attempt.exit_code is not None:
        return f" with exit code {attempt.exit_code}"
    if attempt.signal is not None:
        return f", killed by signal {attempt.signal}"
    return f": {attempt.message}" if attempt.message else ""


def _retrying_fact(run: Run, now: datetime) -> Fact:
    next_number = run.attempts_used + 1
    when = run.not_before.isoformat()
    timing = f"at {when}" if run.not_before > now else f"as soon as an agent takes it (due {when})"
    return Fact(
        kind=FactKind.RETRYING,
        message=f"retrying: attempt {next_number} of {run.max_attempts} {timing}",
    )


def _precondition_facts(run: Run) -> list[Fact]:
    if run.precondition_checks == 0:
        return []
    since = run.first_checked_at.isoformat() if run.first_checked_at else "?"
    waiting = [v for v in run.precondition_verdicts if not v.ready]
    head = f"preconditions checked {run.precondition_checks} time(s) since {since}"
    facts = [
        Fact(
            kind=FactKind.PRECONDITION,
            message=f"{head}; precondition {v.index} not ready: {v.message or 'no message'}",
        )
        for v in waiting
    ]
    if not facts:
        facts.append(Fact(kind=FactKind.PRECONDITION, message=f"{head}; all were ready"))
    if run.state is RunState.QUEUED:
        facts.append(_not_before_fact(run, "next check"))
    return facts


def _not_before_fact(run: Run, what: str = "not dispatched before") -> Fact:
    return Fact(kind=FactKind.NOT_BEFORE, message=f"{what} {run.not_before.isoformat()}")


def _leased_fact(run: Run) -> Fact:
    message = f"leased to agent {run.agent}; the attempt has not started yet"
    return Fact(kind=FactKind.ATTEMPT, message=message, ids={"agent_id": run.agent})


def _reason_fact(run: Run) -> Fact:
    return Fact(kind=FactKind.REASON, message=run.reason or f"{run.state.value.lower()}")


async def _skipped_facts(tx: Transaction, task_id: int, task: Task, run: Run) -> list[Fact]:
    if run.reason.startswith("upstream "):
        return await why_missing.upstream_facts(tx, task, run.occurrence)
    if run.reason.startswith("overlap:") and run.finished_at is not None:
        holders = await occurrences.active_at(tx, task_id, run.occurrence, run.finished_at)
        limit = task.spec.concurrency.max_active_runs
        return [_overlap_fact(holders, limit, "was skipped because of")] if holders else []
    return []
