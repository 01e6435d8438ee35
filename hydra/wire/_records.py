"""Registered tasks and their versions, runs, attempts, verdicts, agents, coordinators."""

from __future__ import annotations

from hydra.domain import (
    Agent,
    Attempt,
    Coordinator,
    PreconditionVerdict,
    Retention,
    Run,
    Task,
    TaskVersion,
)
from hydra.occurrences import Explanation, Fact, FactKind
from hydra.v1 import run_service_pb2 as run_pb
from hydra.v1 import types_pb2 as pb
from hydra.wire._specs import retention_to_proto, task_spec_from_proto, task_spec_to_proto
from hydra.wire._states import (
    attempt_state_from_proto,
    attempt_state_to_proto,
    run_state_from_proto,
    run_state_to_proto,
)
from hydra.wire._times import from_timestamp, optional_duration, optional_timestamp, to_timestamp

# --- tasks, runs, attempts, agents ------------------------------------------------------


def task_to_proto(task: Task) -> pb.Task:
    """The proto of a registered task."""
    return pb.Task(
        name=task.name,
        version=task.version,
        paused=task.paused,
        spec=task_spec_to_proto(task.spec),
        created_at=to_timestamp(task.created_at),
        updated_at=to_timestamp(task.updated_at),
        next_fire_at=to_timestamp(task.next_fire_at),
        effective_retention=(
            None
            if task.effective_retention is None
            else retention_to_proto(task.effective_retention)
        ),
    )


def task_from_proto(message: pb.Task) -> Task:
    """The registered task a proto describes; its spec is validated.

    Raises:
        InvalidArgument: The spec is invalid.
    """
    return Task(
        name=message.name,
        version=message.version,
        paused=message.paused,
        spec=task_spec_from_proto(message.spec),
        created_at=from_timestamp(message.created_at),
        updated_at=from_timestamp(message.updated_at),
        next_fire_at=optional_timestamp(message, "next_fire_at"),
        effective_retention=_effective_retention(message),
    )


def _effective_retention(message: pb.Task) -> Retention | None:
    if not message.HasField("effective_retention"):
        return None
    retention = message.effective_retention
    return Retention(
        max_age=optional_duration(retention, "max_age"),
        keep_last=retention.keep_last if retention.HasField("keep_last") else None,
        output_max_age=optional_duration(retention, "output_max_age"),
    )


def task_version_to_proto(version: TaskVersion) -> pb.TaskVersion:
    """The proto of one stored version of a task."""
    return pb.TaskVersion(
        version=version.version,
        spec=task_spec_to_proto(version.spec),
        created_at=to_timestamp(version.created_at),
    )


def task_version_from_proto(message: pb.TaskVersion) -> TaskVersion:
    """The task version a proto describes; its spec is validated.

    Raises:
        InvalidArgument: The spec is invalid.
    """
    return TaskVersion(
        version=message.version,
        spec=task_spec_from_proto(message.spec),
        created_at=from_timestamp(message.created_at),
    )


def attempt_to_proto(attempt: Attempt) -> pb.Attempt:
    """The proto of an attempt."""
    return pb.Attempt(
        number=attempt.number,
        state=attempt_state_to_proto(attempt.state),
        agent=attempt.agent,
        argv=attempt.argv,
        exit_code=attempt.exit_code,
        signal=attempt.signal,
        started_at=to_timestamp(attempt.started_at),
        finished_at=to_timestamp(attempt.finished_at),
        message=attempt.message,
        lease_token=attempt.lease_token,
    )


def attempt_from_proto(message: pb.Attempt) -> Attempt:
    """The attempt a proto describes.

    Raises:
        InvalidArgument: The state is unspecified or unknown.
    """
    return Attempt(
        number=message.number,
        state=attempt_state_from_proto(message.state),
        agent=message.agent,
        argv=tuple(message.argv),
        lease_token=message.lease_token,
        started_at=from_timestamp(message.started_at),
        finished_at=optional_timestamp(message, "finished_at"),
        exit_code=message.exit_code if message.HasField("exit_code") else None,
        signal=message.signal if message.HasField("signal") else None,
        message=message.message,
    )


def run_to_proto(run: Run) -> pb.Run:
    """The proto of a run, with its attempts."""
    return pb.Run(
        id=run.id,
        task=run.task,
        task_version=run.task_version,
        occurrence=to_timestamp(run.occurrence),
        state=run_state_to_proto(run.state),
        cause=run.cause,
        params=run.params,
        created_at=to_timestamp(run.created_at),
        started_at=to_timestamp(run.started_at),
        finished_at=to_timestamp(run.finished_at),
        not_before=to_timestamp(run.not_before),
        attempts_used=run.attempts_used,
        max_attempts=run.max_attempts,
        reason=run.reason,
        agent=run.agent,
        attempts=[attempt_to_proto(attempt) for attempt in run.attempts],
        outputs_json=run.outputs_json,
        idempotency_key=run.idempotency_key,
        precondition_checks=run.precondition_checks,
        precondition_verdicts=[verdict_to_proto(v) for v in run.precondition_verdicts],
        first_checked_at=to_timestamp(run.first_checked_at),
    )


def verdict_to_proto(verdict: PreconditionVerdict) -> pb.PreconditionVerdict:
    """The proto of a precondition verdict."""
    return pb.PreconditionVerdict(
        index=verdict.index,
        ready=verdict.ready,
        message=verdict.message,
        checked_at=to_timestamp(verdict.checked_at),
    )


def verdict_from_proto(message: pb.PreconditionVerdict) -> PreconditionVerdict:
    """The precondition verdict a proto describes."""
    return PreconditionVerdict(
        index=message.index,
        ready=message.ready,
        message=message.message,
        checked_at=optional_timestamp(message, "checked_at"),
    )


def run_from_proto(message: pb.Run) -> Run:
    """The run a proto describes, with its attempts.

    Raises:
        InvalidArgument: A state is unspecified or unknown.
    """
    return Run(
        id=message.id,
        task=message.task,
        task_version=message.task_version,
        occurrence=from_timestamp(message.occurrence),
        state=run_state_from_proto(message.state),
        cause=message.cause,
        params=dict(message.params),
        created_at=from_timestamp(message.created_at),
        started_at=optional_timestamp(message, "started_at"),
        finished_at=optional_timestamp(message, "finished_at"),
        not_before=from_timestamp(message.not_before),
        attempts_used=message.attempts_used,
        max_attempts=message.max_attempts,
        reason=message.reason,
        agent=message.agent,
        attempts=tuple(attempt_from_proto(attempt) for attempt in message.attempts),
        outputs_json=message.outputs_json,
        idempotency_key=message.idempotency_key,
        precondition_checks=message.precondition_checks,
        precondition_verdicts=tuple(verdict_from_proto(v) for v in message.precondition_verdicts),
        first_checked_at=optional_timestamp(message, "first_checked_at"),
    )


def agent_to_proto(agent: Agent) -> pb.Agent:
    """The proto of an agent."""
    return pb.Agent(
        id=agent.id,
        hostname=agent.hostname,
        labels=agent.labels,
        capacity=agent.capacity,
        version=agent.version,
        state=agent.state,
        coordinator=agent.coordinator,
        connected_at=to_timestamp(agent.connected_at),
        last_seen_at=to_timestamp(agent.last_seen_at),
        active_runs=agent.active_runs,
    )


def agent_from_proto(message: pb.Agent) -> Agent:
    """The agent a proto describes."""
    return Agent(
        id=message.id,
        hostname=message.hostname,
        labels=dict(message.labels),
        capacity=message.capacity,
        version=message.version,
        state=message.state,
        coordinator=message.coordinator,
        connected_at=optional_timestamp(message, "connected_at"),
        last_seen_at=optional_timestamp(message, "last_seen_at"),
        active_runs=message.active_runs,
    )


def coordinator_to_proto(coordinator: Coordinator) -> pb.Coordinator:
    """The proto of a coordinator."""
    return pb.Coordinator(
        id=coordinator.id,
        address=coordinator.address,
        version=coordinator.version,
        started_at=to_timestamp(coordinator.started_at),
        last_heartbeat_at=to_timestamp(coordinator.last_heartbeat_at),
        agents_connected=coordinator.agents_connected,
        insecure=coordinator.insecure,
        tls=coordinator.tls,
    )


def coordinator_from_proto(message: pb.Coordinator) -> Coordinator:
    """The coordinator a proto describes."""
    return Coordinator(
        id=message.id,
        address=message.address,
        version=message.version,
        started_at=from_timestamp(message.started_at),
        last_heartbeat_at=from_timestamp(message.last_heartbeat_at),
        agents_connected=message.agents_connected,
        insecure=message.insecure,
        tls=message.tls,
    )


# --- why ----------------------------------------------------------------------------


def explanation_to_proto(explanation: Explanation) -> run_pb.WhyResponse:
    """The proto of the answer to "why" for one occurrence."""
    message = run_pb.WhyResponse(
        task=explanation.task,
        occurrence=to_timestamp(explanation.occurrence),
        facts=[
            run_pb.WhyFact(kind=fact.kind.value, message=fact.message, ids=dict(fact.ids))
            for fact in explanation.facts
        ],
    )
    if explanation.run is not None:
        message.run.CopyFrom(run_to_proto(explanation.run))
    return message


def explanation_from_proto(message: run_pb.WhyResponse) -> Explanation:
    """The answer to "why" from its proto; a fact kind this client does not know
    reads as "unknown", its message intact."""
    return Explanation(
        task=message.task,
        occurrence=from_timestamp(message.occurrence),
        run=run_from_proto(message.run) if message.HasField("run") else None,
        facts=tuple(
            Fact(kind=_fact_kind(fact.kind), message=fact.message, ids=dict(fact.ids))
            for fact in message.facts
        ),
    )


def _fact_kind(kind: str) -> FactKind:
    try:
        return FactKind(kind)
    except ValueError:
        return FactKind.UNKNOWN
