"""Translation between ``hydra.v1`` messages and domain types, in one place.

gRPC handlers and the client call these functions at the edge; no protobuf
object travels further in. Unset proto fields become the domain's defaults
(or ``None`` where the domain has "unset"), and every spec that comes off the
wire is validated with ``hydra.spec``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, overload

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from hydra.domain import (
    After,
    Agent,
    At,
    Attempt,
    AttemptState,
    Catchup,
    CommandCheck,
    Concurrency,
    Coordinator,
    Cron,
    FileCheck,
    HttpCheck,
    Interval,
    OnTimeout,
    Overlap,
    Precondition,
    PreconditionVerdict,
    Retry,
    Run,
    RunState,
    Task,
    TaskSpec,
    TaskVersion,
    TcpCheck,
    Trigger,
)
from hydra.errors import FieldProblem, InvalidArgument
from hydra.spec import validate_parsed_task
from hydra.v1 import types_pb2 as pb

__all__ = [
    "agent_from_proto",
    "agent_to_proto",
    "attempt_from_proto",
    "attempt_state_from_proto",
    "attempt_state_to_proto",
    "attempt_to_proto",
    "from_duration",
    "from_timestamp",
    "optional_duration",
    "optional_timestamp",
    "run_from_proto",
    "run_state_from_proto",
    "run_state_to_proto",
    "run_to_proto",
    "task_from_proto",
    "task_spec_from_proto",
    "task_spec_to_proto",
    "task_to_proto",
    "task_version_from_proto",
    "task_version_to_proto",
    "to_duration",
    "to_timestamp",
]

_D = TypeVar("_D")

# --- times ----------------------------------------------------------------------------


@overload
def to_timestamp(instant: datetime) -> Timestamp: ...
@overload
def to_timestamp(instant: None) -> None: ...
def to_timestamp(instant: datetime | None) -> Timestamp | None:
    """The Timestamp of an aware datetime; ``None`` stays ``None`` (an unset field).

    Raises:
        ValueError: ``instant`` is naive.
    """
    if instant is None:
        return None
    if instant.utcoffset() is None:
        raise ValueError(f"naive datetime {instant!r}: Hydra times are aware")
    timestamp = Timestamp()
    timestamp.FromDatetime(instant.astimezone(UTC))
    return timestamp


def from_timestamp(timestamp: Timestamp) -> datetime:
    """The aware UTC datetime of a Timestamp (microsecond precision)."""
    return timestamp.ToDatetime(tzinfo=UTC)


@overload
def to_duration(duration: timedelta) -> Duration: ...
@overload
def to_duration(duration: None) -> None: ...
def to_duration(duration: timedelta | None) -> Duration | None:
    """The Duration of a timedelta; ``None`` stays ``None`` (an unset field)."""
    if duration is None:
        return None
    message = Duration()
    message.FromTimedelta(duration)
    return message


def from_duration(duration: Duration) -> timedelta:
    """The timedelta of a Duration (microsecond precision)."""
    return duration.ToTimedelta()


def optional_timestamp(message: Message, field: str) -> datetime | None:
    """The time in ``message.<field>``, or ``None`` when the field is unset."""
    return from_timestamp(getattr(message, field)) if message.HasField(field) else None


def optional_duration(message: Message, field: str) -> timedelta | None:
    """The duration in ``message.<field>``, or ``None`` when the field is unset."""
    return from_duration(getattr(message, field)) if message.HasField(field) else None


# --- enums ------------------------------------------------------------------------------

_RUN_STATES = {state: pb.RunState.Value(f"RUN_STATE_{state.name}") for state in RunState}
_ATTEMPT_STATES = {
    state: pb.AttemptState.Value(f"ATTEMPT_STATE_{state.name}") for state in AttemptState
}
_OVERLAPS = {overlap: pb.Overlap.Value(f"OVERLAP_{overlap.name}") for overlap in Overlap}
_CATCHUPS = {catchup: pb.Catchup.Value(f"CATCHUP_{catchup.name}") for catchup in Catchup}
_ON_TIMEOUTS = {choice: pb.OnTimeout.Value(f"ON_TIMEOUT_{choice.name}") for choice in OnTimeout}


def _inverse(mapping: Mapping[_D, int]) -> dict[int, _D]:
    return {number: member for member, number in mapping.items()}


_RUN_STATES_BACK = _inverse(_RUN_STATES)
_ATTEMPT_STATES_BACK = _inverse(_ATTEMPT_STATES)
_OVERLAPS_BACK = _inverse(_OVERLAPS)
_CATCHUPS_BACK = _inverse(_CATCHUPS)
_ON_TIMEOUTS_BACK = _inverse(_ON_TIMEOUTS)


def run_state_to_proto(state: RunState) -> pb.RunState.ValueType:
    """The proto enum value of a run state."""
    return _RUN_STATES[RunState(state)]


def run_state_from_proto(value: int, path: str = "state") -> RunState:
    """The run state of a proto enum value.

    Raises:
        InvalidArgument: ``value`` is ``RUN_STATE_UNSPECIFIED`` or unknown.
    """
    return _member(_RUN_STATES_BACK, value, path)


def attempt_state_to_proto(state: AttemptState) -> pb.AttemptState.ValueType:
    """The proto enum value of an attempt state."""
    return _ATTEMPT_STATES[AttemptState(state)]


def attempt_state_from_proto(value: int, path: str = "state") -> AttemptState:
    """The attempt state of a proto enum value.

    Raises:
        InvalidArgument: ``value`` is ``ATTEMPT_STATE_UNSPECIFIED`` or unknown.
    """
    return _member(_ATTEMPT_STATES_BACK, value, path)


def _member(members: Mapping[int, _D], value: int, path: str) -> _D:
    try:
        return members[value]
    except KeyError:
        raise InvalidArgument(f"unknown or unspecified value {value}", path) from None


# --- task specs -------------------------------------------------------------------------


def task_spec_to_proto(spec: TaskSpec) -> pb.TaskSpec:
    """The proto of a valid spec; every field is set explicitly, defaults too."""
    return pb.TaskSpec(
        name=spec.name,
        description=spec.description,
        command=spec.command,
        shell=spec.shell,
        env=spec.env,
        params=spec.params,
        workdir=spec.workdir,
        timeout=to_duration(spec.timeout),
        retry=_retry_to_proto(spec.retry),
        triggers=[_trigger_to_proto(trigger) for trigger in spec.triggers],
        preconditions=[precondition_to_proto(check) for check in spec.preconditions],
        poke_interval=to_duration(spec.poke_interval),
        precondition_timeout=to_duration(spec.precondition_timeout),
        on_timeout=_ON_TIMEOUTS[OnTimeout(spec.on_timeout)],
        selector=spec.selector,
        concurrency=pb.Concurrency(
            max_active_runs=spec.concurrency.max_active_runs,
            overlap=_OVERLAPS[Overlap(spec.concurrency.overlap)],
        ),
        catchup=_CATCHUPS[Catchup(spec.catchup)],
        max_catchup=spec.max_catchup,
        starting_deadline=to_duration(spec.starting_deadline),
    )


def _retry_to_proto(retry: Retry) -> pb.RetryPolicy:
    return pb.RetryPolicy(
        max_attempts=retry.max_attempts,
        backoff=to_duration(retry.backoff),
        max_backoff=to_duration(retry.max_backoff),
        multiplier=retry.multiplier,
    )


def _trigger_to_proto(trigger: Trigger) -> pb.Trigger:
    match trigger:
        case Cron():
            cron = pb.CronTrigger(expression=trigger.expression, timezone=trigger.timezone)
            return pb.Trigger(cron=cron)
        case Interval():
            every, anchor = to_duration(trigger.every), to_timestamp(trigger.anchor)
            return pb.Trigger(interval=pb.IntervalTrigger(every=every, anchor=anchor))
        case At():
            return pb.Trigger(at=pb.AtTrigger(at=to_timestamp(trigger.at)))
        case After():
            return pb.Trigger(after=pb.AfterTrigger(tasks=trigger.tasks))
    raise TypeError(f"not a trigger: {trigger!r}")


def precondition_to_proto(check: Precondition) -> pb.Precondition:
    """The proto of a precondition (used for specs and, rendered, for lease offers)."""
    timeout = to_duration(check.timeout)
    match check:
        case CommandCheck():
            return pb.Precondition(command=pb.CommandCheck(argv=check.argv), timeout=timeout)
        case FileCheck():
            file = pb.FileCheck(path=check.path, min_age=to_duration(check.min_age))
            return pb.Precondition(file=file, timeout=timeout)
        case HttpCheck():
            return pb.Precondition(http=pb.HttpCheck(url=check.url), timeout=timeout)
        case TcpCheck():
            tcp = pb.TcpCheck(host=check.host, port=check.port)
            return pb.Precondition(tcp=tcp, timeout=timeout)
    raise TypeError(f"not a precondition: {check!r}")


def task_spec_from_proto(message: pb.TaskSpec, path: str = "spec") -> TaskSpec:
    """The valid spec a proto describes; unset fields take the domain's defaults.

    Args:
        message: The spec as received.
        path: Prefix of every problem's path.

    Raises:
        InvalidArgument: With a problem per unusable or invalid field, e.g.
            ``spec.triggers[0]`` for a trigger with no kind set.
    """
    decoder = _Decoder()
    fields = {
        "name": message.name,
        "description": message.description,
        "command": tuple(message.command),
        "shell": message.shell,
        "env": dict(message.env),
        "params": dict(message.params),
        "workdir": message.workdir,
        "selector": dict(message.selector),
        "triggers": decoder.triggers(message.triggers, _join(path, "triggers")),
        "preconditions": decoder.preconditions(message.preconditions, _join(path, "preconditions")),
        **decoder.durations(message, path, "timeout", "precondition_timeout", "starting_deadline"),
        **decoder.durations(message, path, "poke_interval", default_when_unset=True),
        **decoder.enums(message, path, on_timeout=_ON_TIMEOUTS_BACK, catchup=_CATCHUPS_BACK),
        **_present(message, "max_catchup"),
    }
    if message.HasField("retry"):
        fields["retry"] = decoder.retry(message.retry, _join(path, "retry"))
    if message.HasField("concurrency"):
        fields["concurrency"] = decoder.concurrency(message.concurrency, _join(path, "concurrency"))
    spec = TaskSpec(**fields)
    validate_parsed_task(spec, path, decoder.problems)
    return spec


def _join(path: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{path}[{name}]"
    return f"{path}.{name}" if path else name


def _present(message: Message, *names: str) -> dict[str, Any]:
    """The set ``optional`` scalars among ``names``; unset ones keep domain defaults."""
    return {name: getattr(message, name) for name in names if message.HasField(name)}


class _Decoder:
    """Reads the parts of a spec proto, collecting what cannot be used.

    An unusable value becomes ``None`` in the spec, and a problem here;
    ``validate_parsed_task`` then leaves out its own problems about that field.
    """

    def __init__(self) -> None:
        self.problems: list[FieldProblem] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(FieldProblem(path=path, message=message))

    def require(self, message: Message, field: str, path: str) -> None:
        if not message.HasField(field):
            self.add(path, "is required")

    def duration(self, message: Message, field: str, path: str) -> timedelta | None:
        """The duration in a field, ``None`` when unset (or out of range: a problem)."""
        if not message.HasField(field):
            return None
        try:
            return from_duration(getattr(message, field))
        except (ValueError, OverflowError):
            self.add(path, "duration out of range")
            return None

    def timestamp(self, message: Message, field: str, path: str) -> datetime | None:
        """The time in a field, ``None`` when unset (or out of range: a problem)."""
        if not message.HasField(field):
            return None
        try:
            return from_timestamp(getattr(message, field))
        except (ValueError, OverflowError):
            self.add(path, "timestamp out of range")
            return None

    def durations(
        self, message: Message, path: str, *names: str, default_when_unset: bool = False
    ) -> dict[str, Any]:
        """Duration fields: unset ones are ``None``, or absent to take the domain default."""
        return {
            name: self.duration(message, name, _join(path, name))
            for name in names
            if message.HasField(name) or not default_when_unset
        }

    def enums(self, message: Message, path: str, **members: Mapping[int, Any]) -> dict[str, Any]:
        """Enum fields; UNSPECIFIED ones are absent, to take the domain default."""
        found = {}
        for name, by_number in members.items():
            number = getattr(message, name)
            if number in by_number:
                found[name] = by_number[number]
            elif number != 0:
                self.add(_join(path, name), f"unknown value {number}")
                found[name] = None
        return found

    def retry(self, message: pb.RetryPolicy, path: str) -> Retry:
        fields = _present(message, "max_attempts", "multiplier")
        fields |= self.durations(message, path, "backoff", "max_backoff", default_when_unset=True)
        return Retry(**fields)

    def concurrency(self, message: pb.Concurrency, path: str) -> Concurrency:
        fields = _present(message, "max_active_runs")
        return Concurrency(**fields, **self.enums(message, path, overlap=_OVERLAPS_BACK))

    def triggers(self, messages: Any, path: str) -> tuple[Trigger | None, ...]:
        return tuple(self.trigger(m, _join(path, i)) for i, m in enumerate(messages))

    def trigger(self, message: pb.Trigger, path: str) -> Trigger | None:
        kind = message.WhichOneof("kind")
        if kind == "cron":
            return Cron(expression=message.cron.expression, timezone=message.cron.timezone or "UTC")
        if kind == "interval":
            every_path = _join(path, "interval")
            self.require(message.interval, "every", every_path)
            every = self.duration(message.interval, "every", every_path)
            anchor = self.timestamp(message.interval, "anchor", _join(path, "anchor"))
            return Interval(every=every, anchor=anchor)  # type: ignore[arg-type]  # None: reported
        if kind == "at":
            self.require(message.at, "at", _join(path, "at"))
            return At(at=self.timestamp(message.at, "at", _join(path, "at")))  # type: ignore[arg-type]
        if kind == "after":
            return After(tasks=tuple(message.after.tasks))
        self.add(path, "no trigger kind set; expected one of cron, interval, at, after")
        return None

    def preconditions(self, messages: Any, path: str) -> tuple[Precondition | None, ...]:
        return tuple(self.precondition(m, _join(path, i)) for i, m in enumerate(messages))

    def precondition(self, message: pb.Precondition, path: str) -> Precondition | None:
        kind = message.WhichOneof("kind")
        fields = self.durations(message, path, "timeout", default_when_unset=True)
        if kind == "command":
            return CommandCheck(argv=tuple(message.command.argv), **fields)
        if kind == "file":
            min_age = self.durations(message.file, path, "min_age")
            return FileCheck(path=message.file.path, **min_age, **fields)
        if kind == "http":
            return HttpCheck(url=message.http.url, **fields)
        if kind == "tcp":
            return TcpCheck(host=message.tcp.host, port=message.tcp.port, **fields)
        self.add(path, "no precondition kind set; expected one of command, file, http, tcp")
        return None


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
    )
