"""Every message a coordinator sends to an agent, and the reports it reads from
one, translated between the wire and the coordinator's records in one place."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from hydra.coordinator.store.records import (
    AttemptReport,
    AttemptStart,
    ClaimedRun,
    LeaseTimes,
    OutputTail,
    ReportVerdict,
)
from hydra.coordinator.templates import Rendered
from hydra.domain import DEFAULT_OUTPUT_LIMIT, LeaseKey, Precondition
from hydra.v1 import agent_service_pb2 as pb
from hydra.v1 import run_service_pb2
from hydra.wire import (
    from_timestamp,
    outcome_from_proto,
    precondition_to_proto,
    to_duration,
    to_timestamp,
)

#: The streams output is stored for (the values of the stream column).
_OUTPUT_STREAMS = frozenset(
    {run_service_pb2.OUTPUT_STREAM_STDOUT, run_service_pb2.OUTPUT_STREAM_STDERR}
)


def lease_ref(key: LeaseKey) -> pb.LeaseRef:
    """A lease on the wire."""
    return pb.LeaseRef(run_id=key[0], lease_token=key[1])


def lease_key(ref: pb.LeaseRef) -> LeaseKey:
    """A lease from the wire."""
    return LeaseKey(ref.run_id, ref.lease_token)


def welcome(
    coordinator_id: str, times: LeaseTimes, revoked: Iterable[LeaseKey], *, protocol_version: int
) -> pb.CoordinatorMessage:
    """The answer to an agent's Hello; the stream speaks `protocol_version`."""
    return pb.CoordinatorMessage(
        welcome=pb.Welcome(
            coordinator_id=coordinator_id,
            heartbeat_interval=to_duration(times.heartbeat_interval),
            lease_ttl=to_duration(times.ttl),
            revoked=[lease_ref(key) for key in revoked],
            protocol_version=protocol_version,
        )
    )


def batched(messages: list[pb.CoordinatorMessage]) -> pb.CoordinatorMessage:
    """One stream message for `messages`: the one alone, or a batch of them."""
    if len(messages) == 1:
        return messages[0]
    return pb.CoordinatorMessage(batch=pb.CoordinatorBatch(messages=messages))


def offer(
    run: ClaimedRun,
    rendered: Rendered,
    checks: Iterable[Precondition],
    times: LeaseTimes,
    *,
    output_limit: int = DEFAULT_OUTPUT_LIMIT,
) -> pb.CoordinatorMessage:
    """A lease offer: the rendered command, its preconditions, timing and output limit.
    Its `start_in` is set as it leaves (see `with_start_in`)."""
    message = pb.LeaseOffer(
        lease=lease_ref(LeaseKey(run.run_id, run.lease_token)),
        task=run.task_name,
        attempt=run.attempt,
        argv=list(rendered.argv),
        env=dict(rendered.env),
        secret_env=run.task_spec.secret_env,  # names only: the agent holds the values
        workdir=rendered.workdir,
        kill_grace=to_duration(times.kill_grace),
        occurrence=to_timestamp(run.occurrence),
        preconditions=[precondition_to_proto(check) for check in checks],
        output_limit=output_limit,
    )
    if run.task_spec.timeout is not None:
        message.timeout.CopyFrom(to_duration(run.task_spec.timeout))
    return pb.CoordinatorMessage(lease=message)


def with_start_in(message: pb.CoordinatorMessage, not_before: datetime) -> pb.CoordinatorMessage:
    """An offer of a run leased ahead, told how long to wait from now: a duration,
    so that the agent's clock does not matter, and the offer's wait in the
    outbox does not count."""
    wait = not_before - datetime.now(UTC)
    if wait > timedelta(0):
        message.lease.start_in.FromTimedelta(wait)
    return message


def cancel(key: LeaseKey, reason: str) -> pb.CoordinatorMessage:
    """Kill the attempt under this lease."""
    return pb.CoordinatorMessage(cancel=pb.CancelAttempt(lease=lease_ref(key), reason=reason))


def drain(reason: str, *, reconnect_elsewhere: bool = False) -> pb.CoordinatorMessage:
    """Take no new leases (and, when this coordinator stops, move to another)."""
    return pb.CoordinatorMessage(
        drain=pb.Drain(reason=reason, reconnect_elsewhere=reconnect_elsewhere)
    )


def heartbeat_ack(sequence: int, revoked: Iterable[LeaseKey]) -> pb.CoordinatorMessage:
    """A heartbeat was recorded; the listed leases that are no longer the agent's."""
    return pb.CoordinatorMessage(
        heartbeat_ack=pb.HeartbeatAck(sequence=sequence, revoked=[lease_ref(k) for k in revoked])
    )


def report_ack(key: LeaseKey, verdict: ReportVerdict) -> pb.CoordinatorMessage:
    """An attempt's end was recorded, or refused and why."""
    return pb.CoordinatorMessage(
        report_ack=pb.ReportAck(
            lease=lease_ref(key), accepted=verdict.accepted, reason=verdict.reason
        )
    )


def start_from_proto(started: pb.AttemptStarted) -> AttemptStart:
    """An agent's AttemptStarted."""
    return AttemptStart(
        run_id=started.lease.run_id,
        lease_token=started.lease.lease_token,
        argv=tuple(started.argv),
        started_at=from_timestamp(started.started_at),
    )


def report_from_proto(agent_id: str, finished: pb.AttemptFinished) -> AttemptReport:
    """An agent's AttemptFinished."""
    finished_at = from_timestamp(finished.finished_at)
    started_at = from_timestamp(finished.started_at) if finished.HasField("started_at") else None
    return AttemptReport(
        run_id=finished.lease.run_id,
        lease_token=finished.lease.lease_token,
        agent_id=agent_id,
        outcome=outcome_from_proto(finished.outcome),
        argv=tuple(finished.argv),
        started_at=started_at or finished_at,
        finished_at=finished_at,
        exit_code=finished.exit_code if finished.HasField("exit_code") else None,
        signal=finished.signal if finished.HasField("signal") else None,
        message=finished.message,
        outputs_json=finished.outputs_json,
        output_tails=tuple(
            OutputTail(stream=int(tail.stream), total_bytes=tail.total_bytes, data=tail.data)
            for tail in finished.output_tails
            if tail.stream in _OUTPUT_STREAMS
        ),
    )
