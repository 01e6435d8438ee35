"""The agent's stream messages: ``hydra.v1`` messages built from, and read into, its own values.

The only agent module that builds or reads protobuf messages besides the
stream handler in ``hydra.agent.session``. (``hydra.wire`` is the shared
translation of domain types; this is the agent's side of the stream.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from hydra import stream_batches
from hydra.agent.attempt import AttemptResult, AttemptSpec, OutputStream, Started, StreamTail
from hydra.agent.preconditions import Check, UnsupportedCheck
from hydra.domain import (
    DEFAULT_CHECK_TIMEOUT,
    DEFAULT_OUTPUT_LIMIT,
    MAX_CHECK_TIMEOUT,
    CommandCheck,
    FileCheck,
    HttpCheck,
    LeaseKey,
    PreconditionVerdict,
    TcpCheck,
)
from hydra.v1 import agent_service_pb2 as pb
from hydra.v1 import run_service_pb2, types_pb2
from hydra.wire import outcome_to_proto

_STREAMS = {
    OutputStream.STDOUT: run_service_pb2.OUTPUT_STREAM_STDOUT,
    OutputStream.STDERR: run_service_pb2.OUTPUT_STREAM_STDERR,
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Terms:
    """What a coordinator's Welcome sets for the stream."""

    coordinator_id: str
    heartbeat_interval: timedelta
    lease_ttl: timedelta
    revoked: tuple[LeaseKey, ...]
    #: The agent protocol version the stream speaks (hydra.stream_batches).
    protocol_version: int


def lease_key(ref: pb.LeaseRef) -> LeaseKey:
    """A wire LeaseRef as the agent keys it."""
    return LeaseKey(ref.run_id, ref.lease_token)


def lease_ref(lease: LeaseKey) -> pb.LeaseRef:
    """The wire form of a lease."""
    return pb.LeaseRef(run_id=lease.run_id, lease_token=lease.lease_token)


def terms(welcome: pb.Welcome) -> Terms:
    """The settings a Welcome carries."""
    return Terms(
        coordinator_id=welcome.coordinator_id,
        heartbeat_interval=welcome.heartbeat_interval.ToTimedelta(),
        lease_ttl=welcome.lease_ttl.ToTimedelta(),
        revoked=tuple(lease_key(ref) for ref in welcome.revoked),
        protocol_version=stream_batches.spoken(welcome.protocol_version),
    )


def attempt_spec(offer: pb.LeaseOffer, *, default_kill_grace: timedelta) -> AttemptSpec:
    """What a LeaseOffer asks to run. A missing or non-positive timeout means none."""
    timeout = offer.timeout.ToTimedelta() if offer.HasField("timeout") else None
    return AttemptSpec(
        run_id=offer.lease.run_id,
        task=offer.task,
        attempt=offer.attempt,
        argv=tuple(offer.argv),
        env=dict(offer.env),
        secret_env=dict(offer.secret_env),
        workdir=offer.workdir,
        timeout=timeout if timeout and timeout > timedelta(0) else None,
        kill_grace=(
            offer.kill_grace.ToTimedelta() if offer.HasField("kill_grace") else default_kill_grace
        ),
        occurrence=(
            offer.occurrence.ToDatetime(tzinfo=UTC) if offer.HasField("occurrence") else None
        ),
        output_limit=offer.output_limit or DEFAULT_OUTPUT_LIMIT,
    )


def start_in(offer: pb.LeaseOffer) -> float:
    """Seconds to wait before starting an offered attempt (leased ahead of its time)."""
    return (
        max(0.0, offer.start_in.ToTimedelta().total_seconds())
        if offer.HasField("start_in")
        else 0.0
    )


def preconditions(offer: pb.LeaseOffer) -> tuple[Check, ...]:
    """The rendered preconditions of a LeaseOffer, in spec order."""
    return tuple(precondition(message) for message in offer.preconditions)


def precondition(message: types_pb2.Precondition) -> Check:
    """One rendered precondition. An unset or non-positive timeout means the default;
    none is longer than ``MAX_CHECK_TIMEOUT`` (a spec older than that limit may ask it)."""
    timeout = _positive(message.timeout) if message.HasField("timeout") else None
    timeout = min(timeout or DEFAULT_CHECK_TIMEOUT, MAX_CHECK_TIMEOUT)
    kind = message.WhichOneof("kind")
    if kind == "command":
        return CommandCheck(argv=tuple(message.command.argv), timeout=timeout)
    if kind == "file":
        min_age = _positive(message.file.min_age) if message.file.HasField("min_age") else None
        return FileCheck(path=message.file.path, min_age=min_age, timeout=timeout)
    if kind == "http":
        return HttpCheck(url=message.http.url, timeout=timeout)
    if kind == "tcp":
        return TcpCheck(host=message.tcp.host, port=message.tcp.port, timeout=timeout)
    return UnsupportedCheck(reason="a precondition kind this agent does not know", timeout=timeout)


def hello(
    *,
    agent_id: str,
    instance_id: str,
    hostname: str,
    labels: Mapping[str, str],
    capacity: int,
    version: str,
    held_leases: Iterable[LeaseKey],
    draining: bool,
) -> pb.AgentMessage:
    """The first message of a stream."""
    return pb.AgentMessage(
        hello=pb.Hello(
            agent_id=agent_id,
            instance_id=instance_id,
            hostname=hostname,
            labels=dict(labels),
            capacity=capacity,
            version=version,
            held_leases=[lease_ref(lease) for lease in held_leases],
            draining=draining,
            protocol_version=stream_batches.NEWEST,
            min_protocol_version=stream_batches.OLDEST,
        )
    )


def batched(items: list[pb.AgentMessage]) -> pb.AgentMessage:
    """One stream message for `items`: the one alone, or a batch of them."""
    if len(items) == 1:
        return items[0]
    return pb.AgentMessage(batch=pb.AgentBatch(messages=items))


def heartbeat(leases: Iterable[LeaseKey], *, sequence: int, draining: bool) -> pb.AgentMessage:
    """A heartbeat renewing ``leases``."""
    refs = [lease_ref(lease) for lease in leases]
    return pb.AgentMessage(
        heartbeat=pb.Heartbeat(leases=refs, sequence=sequence, draining=draining)
    )


def attempt_started(lease: LeaseKey, argv: Iterable[str], started: Started) -> pb.AgentMessage:
    """The announcement of a spawned process."""
    return pb.AgentMessage(
        attempt_started=pb.AttemptStarted(
            lease=lease_ref(lease),
            argv=list(argv),
            pid=started.pid,
            started_at=_timestamp(started.started_at),
        )
    )


def output_chunk(lease: LeaseKey, stream: OutputStream, data: bytes) -> pb.AgentMessage:
    """One batch of output."""
    return pb.AgentMessage(
        output=pb.OutputChunk(lease=lease_ref(lease), stream=_STREAMS[stream], data=data)
    )


def attempt_finished(lease: LeaseKey, result: AttemptResult) -> pb.AgentMessage:
    """The report of an attempt's end."""
    report = pb.AttemptFinished(
        lease=lease_ref(lease),
        outcome=outcome_to_proto(result.outcome),
        finished_at=_timestamp(result.finished_at),
        message=result.message,
        argv=list(result.argv),
        outputs_json=result.outputs_json,
        output_tails=[_output_tail(tail) for tail in result.output_tails],
    )
    if result.started_at is not None:
        report.started_at.CopyFrom(_timestamp(result.started_at))
    if result.exit_code is not None:
        report.exit_code = result.exit_code
    if result.signal is not None:
        report.signal = result.signal
    return pb.AgentMessage(attempt_finished=report)


def _output_tail(tail: StreamTail) -> pb.OutputTail:
    return pb.OutputTail(stream=_STREAMS[tail.stream], total_bytes=tail.total_bytes, data=tail.data)


def lease_rejected(lease: LeaseKey, reason: str) -> pb.AgentMessage:
    """The refusal of an offer."""
    return pb.AgentMessage(lease_rejected=pb.LeaseRejected(lease=lease_ref(lease), reason=reason))


def preconditions_checked(
    lease: LeaseKey, verdicts: Iterable[PreconditionVerdict]
) -> pb.AgentMessage:
    """The verdicts on a lease's preconditions; ready when every one holds."""
    messages = [_verdict(verdict) for verdict in verdicts]
    return pb.AgentMessage(
        preconditions_checked=pb.PreconditionsChecked(
            lease=lease_ref(lease),
            ready=all(message.ready for message in messages),
            verdicts=messages,
        )
    )


def _verdict(verdict: PreconditionVerdict) -> types_pb2.PreconditionVerdict:
    message = types_pb2.PreconditionVerdict(
        index=verdict.index, ready=verdict.ready, message=verdict.message
    )
    if verdict.checked_at is not None:
        message.checked_at.CopyFrom(_timestamp(verdict.checked_at))
    return message


def _positive(duration: Duration) -> timedelta | None:
    value = duration.ToTimedelta()
    return value if value > timedelta(0) else None


def _timestamp(value: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(value)
    return message
