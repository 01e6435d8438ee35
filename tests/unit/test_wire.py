"""The wire layer: proto <-> domain translation, lossless both ways."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from hydra.domain import (
    After,
    Agent,
    At,
    Attempt,
    AttemptOutcome,
    AttemptState,
    AuditEntry,
    Catchup,
    CommandCheck,
    Concurrency,
    Cron,
    FileCheck,
    HttpCheck,
    Interval,
    OnTimeout,
    Overlap,
    Retention,
    Retry,
    Run,
    RunState,
    Task,
    TaskSpec,
    TaskVersion,
    TcpCheck,
)
from hydra.errors import InvalidArgument
from hydra.occurrences import Explanation, Fact, FactKind
from hydra.v1 import agent_service_pb2
from hydra.v1 import types_pb2 as pb
from hydra.wire import (
    agent_from_proto,
    agent_to_proto,
    attempt_from_proto,
    attempt_state_from_proto,
    attempt_state_to_proto,
    attempt_to_proto,
    audit_entry_from_proto,
    audit_entry_to_proto,
    explanation_from_proto,
    explanation_to_proto,
    from_duration,
    from_timestamp,
    optional_duration,
    optional_timestamp,
    outcome_from_proto,
    outcome_to_proto,
    run_from_proto,
    run_state_from_proto,
    run_state_to_proto,
    run_to_proto,
    task_from_proto,
    task_spec_from_proto,
    task_spec_to_proto,
    task_to_proto,
    task_version_from_proto,
    task_version_to_proto,
    to_duration,
    to_timestamp,
)

T0 = datetime(2025, 3, 1, 2, 30, 0, 123456, tzinfo=UTC)

SPECS = [
    TaskSpec(name="minimal", command=("true",)),
    TaskSpec(
        name="billing.export",
        description="Nightly export",
        command=("sh -c 'exit 0'",),
        shell=True,
        env={"EXPORT_DIR": "/data/{{ ds }}"},
        params={"region": "au"},
        workdir="/srv/billing",
        timeout=timedelta(minutes=30),
        retry=Retry(
            max_attempts=3,
            backoff=timedelta(microseconds=1500),
            max_backoff=timedelta(minutes=10),
            multiplier=1.5,
        ),
        triggers=(
            Cron(expression="0 30 2 * * *", timezone="Australia/Sydney"),
            Interval(
                every=timedelta(hours=1),
                anchor=datetime(2025, 1, 1, 9, tzinfo=ZoneInfo("Australia/Sydney")),
            ),
            Interval(every=timedelta(seconds=90)),
            At(at=T0),
            After(tasks=("billing.ingest", "billing.fx")),
        ),
        preconditions=(
            CommandCheck(argv=("test", "-f", "x"), timeout=timedelta(seconds=3)),
            FileCheck(path="/data/_READY", min_age=timedelta(minutes=5)),
            FileCheck(path="/data/_OTHER", min_age=timedelta(0)),
            FileCheck(path="/data/_ANY"),
            HttpCheck(url="http://warehouse:8080/health"),
            TcpCheck(host="::1", port=5432, timeout=timedelta(milliseconds=250)),
        ),
        poke_interval=timedelta(minutes=2),
        precondition_timeout=timedelta(hours=6),
        on_timeout=OnTimeout.SKIP,
        selector={"pool": "billing"},
        concurrency=Concurrency(max_active_runs=4, overlap=Overlap.REPLACE),
        catchup=Catchup.ALL,
        max_catchup=1000,
        starting_deadline=timedelta(hours=2),
        retention=Retention(
            max_age=timedelta(days=30), keep_last=0, output_max_age=timedelta(days=7)
        ),
    ),
    TaskSpec(
        name="defaults-explicit",
        command=("x",),
        catchup=Catchup.NONE,
        concurrency=Concurrency(overlap=Overlap.SKIP),
    ),
]


def problems(message: pb.TaskSpec, path: str = "spec") -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        task_spec_from_proto(message, path)
    return {problem.path: problem.message for problem in info.value.problems}


# --- times ----------------------------------------------------------------------------


def test_timestamp_round_trip_is_aware_utc() -> None:
    sydney = datetime(2025, 1, 1, 9, 0, 0, 7, tzinfo=ZoneInfo("Australia/Sydney"))
    back = from_timestamp(to_timestamp(sydney))
    assert back == sydney
    assert back.tzinfo is UTC
    assert back.microsecond == 7


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        to_timestamp(datetime(2025, 1, 1))  # noqa: DTZ001


def test_none_is_an_unset_field() -> None:
    assert to_timestamp(None) is None
    assert to_duration(None) is None
    assert not pb.Run(started_at=to_timestamp(None)).HasField("started_at")


def test_duration_round_trip() -> None:
    for duration in (timedelta(0), timedelta(microseconds=1), timedelta(days=36500)):
        assert from_duration(to_duration(duration)) == duration
    assert to_duration(timedelta(seconds=1.5)) == Duration(seconds=1, nanos=500_000_000)


def test_optional_fields() -> None:
    run = pb.Run(started_at=Timestamp(seconds=60))
    assert optional_timestamp(run, "started_at") == datetime(1970, 1, 1, 0, 1, tzinfo=UTC)
    assert optional_timestamp(run, "finished_at") is None
    check = pb.FileCheck(min_age=Duration(seconds=5))
    assert optional_duration(check, "min_age") == timedelta(seconds=5)
    assert optional_duration(pb.FileCheck(), "min_age") is None


# --- enums ------------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(RunState))
def test_run_state_round_trip(state: RunState) -> None:
    assert pb.RunState.Name(run_state_to_proto(state)) == f"RUN_STATE_{state.name}"
    assert run_state_from_proto(run_state_to_proto(state)) is state


@pytest.mark.parametrize("state", list(AttemptState))
def test_attempt_state_round_trip(state: AttemptState) -> None:
    assert pb.AttemptState.Name(attempt_state_to_proto(state)) == f"ATTEMPT_STATE_{state.name}"
    assert attempt_state_from_proto(attempt_state_to_proto(state)) is state


@pytest.mark.parametrize("outcome", list(AttemptOutcome))
def test_outcome_round_trip(outcome: AttemptOutcome) -> None:
    proto_name = agent_service_pb2.AttemptOutcome.Name(outcome_to_proto(outcome))
    assert proto_name == f"ATTEMPT_OUTCOME_{outcome.name}"
    assert outcome_from_proto(outcome_to_proto(outcome)) is outcome


@pytest.mark.parametrize(
    "value",
    [
        value
        for value in agent_service_pb2.AttemptOutcome.values()
        if value != agent_service_pb2.ATTEMPT_OUTCOME_UNSPECIFIED
    ],
)
def test_every_proto_outcome_round_trips(value: int) -> None:
    assert outcome_to_proto(outcome_from_proto(value)) == value


@pytest.mark.parametrize("value", [agent_service_pb2.ATTEMPT_OUTCOME_UNSPECIFIED, 99])
def test_an_unspecified_or_unknown_outcome_counts_as_failed(value: int) -> None:
    assert outcome_from_proto(value) is AttemptOutcome.FAILED


def test_enums_mirror_the_proto() -> None:
    assert len(pb.RunState.values()) == len(RunState) + 1
    assert len(pb.AttemptState.values()) == len(AttemptState) + 1
    assert len(agent_service_pb2.AttemptOutcome.values()) == len(AttemptOutcome) + 1
    assert len(pb.Overlap.values()) == len(Overlap) + 1
    assert len(pb.Catchup.values()) == len(Catchup) + 1
    assert len(pb.OnTimeout.values()) == len(OnTimeout) + 1


@pytest.mark.parametrize("value", [0, 99])
def test_unspecified_or_unknown_state_is_refused(value: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        run_state_from_proto(value, path="filter.state")
    assert info.value.problems[0].path == "filter.state"
    with pytest.raises(InvalidArgument):
        attempt_state_from_proto(value)


# --- task specs -------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.name)
def test_spec_round_trip(spec: TaskSpec) -> None:
    message = task_spec_to_proto(spec)
    assert task_spec_from_proto(message) == spec
    received = pb.TaskSpec.FromString(message.SerializeToString())
    assert task_spec_from_proto(received) == spec


def test_spec_proto_fields() -> None:
    message = task_spec_to_proto(SPECS[1])
    assert message.triggers[0].cron.timezone == "Australia/Sydney"
    assert message.triggers[1].interval.anchor.ToDatetime(tzinfo=UTC) == datetime(
        2024, 12, 31, 22, tzinfo=UTC
    )
    assert not message.triggers[2].interval.HasField("anchor")
    assert message.preconditions[2].file.HasField("min_age")
    assert not message.preconditions[3].file.HasField("min_age")
    assert message.preconditions[5].tcp.port == 5432
    assert message.on_timeout == pb.ON_TIMEOUT_SKIP
    assert message.concurrency.overlap == pb.OVERLAP_REPLACE
    assert message.catchup == pb.CATCHUP_ALL
    assert message.HasField("timeout")
    assert not task_spec_to_proto(SPECS[0]).HasField("timeout")


def test_unset_fields_take_domain_defaults() -> None:
    message = pb.TaskSpec(
        name="t",
        command=["x"],
        retry=pb.RetryPolicy(max_attempts=4),
        concurrency=pb.Concurrency(),
        triggers=[pb.Trigger(cron=pb.CronTrigger(expression="* * * * *"))],
        preconditions=[pb.Precondition(http=pb.HttpCheck(url="https://x"))],
    )
    assert task_spec_from_proto(message) == TaskSpec(
        name="t",
        command=("x",),
        retry=Retry(max_attempts=4),
        triggers=(Cron(expression="* * * * *", timezone="UTC"),),
        preconditions=(HttpCheck(url="https://x"),),
    )


def test_plain_string_enums_from_the_sdk_are_encoded() -> None:
    plain: Any = "skip"
    spec = TaskSpec(name="t", command=("x",), on_timeout=plain)
    assert task_spec_to_proto(spec).on_timeout == pb.ON_TIMEOUT_SKIP


@pytest.mark.parametrize(
    ("message", "path", "text"),
    [
        (pb.TaskSpec(triggers=[pb.Trigger()]), "spec.triggers[0]", "no trigger kind set"),
        (
            pb.TaskSpec(preconditions=[pb.Precondition()]),
            "spec.preconditions[0]",
            "no precondition kind set",
        ),
        (
            pb.TaskSpec(triggers=[pb.Trigger(interval=pb.IntervalTrigger())]),
            "spec.triggers[0].interval",
            "is required",
        ),
        (pb.TaskSpec(triggers=[pb.Trigger(at=pb.AtTrigger())]), "spec.triggers[0].at", "required"),
        (
            pb.TaskSpec(triggers=[pb.Trigger(at=pb.AtTrigger(at=Timestamp(seconds=10**15)))]),
            "spec.triggers[0].at",
            "timestamp out of range",
        ),
        (pb.TaskSpec(timeout=Duration(seconds=10**15)), "spec.timeout", "duration out of range"),
        (pb.TaskSpec(on_timeout=9), "spec.on_timeout", "unknown value 9"),  # type: ignore[arg-type]
        (pb.TaskSpec(catchup=7), "spec.catchup", "unknown value 7"),  # type: ignore[arg-type]
        (
            pb.TaskSpec(concurrency=pb.Concurrency(overlap=5)),  # type: ignore[arg-type]
            "spec.concurrency.overlap",
            "unknown value 5",
        ),
        (
            pb.TaskSpec(retry=pb.RetryPolicy(max_attempts=0)),
            "spec.retry.max_attempts",
            "between 1 and 100",
        ),
        (pb.TaskSpec(timeout=Duration(seconds=-1)), "spec.timeout", "must be positive"),
        (
            pb.TaskSpec(
                triggers=[pb.Trigger(cron=pb.CronTrigger(expression="* * * * *", timezone="X/Y"))]
            ),
            "spec.triggers[0].timezone",
            "unknown time zone 'X/Y'",
        ),
        (
            pb.TaskSpec(preconditions=[pb.Precondition(tcp=pb.TcpCheck(host="db"))]),
            "spec.preconditions[0].tcp",
            "between 1 and 65535, got 0",
        ),
    ],
)
def test_spec_problem(message: pb.TaskSpec, path: str, text: str) -> None:
    message.name = message.name or "t"
    if not message.command:
        message.command.append("x")
    found = problems(message)
    assert list(found) == [path]
    assert text in found[path]


def test_every_problem_is_reported_with_the_given_prefix() -> None:
    message = pb.TaskSpec(
        name="Bad",
        command=["python", "x" * (10 * 1024 * 1024)],
        triggers=[pb.Trigger(), pb.Trigger(after=pb.AfterTrigger(tasks=["Bad"]))],
        max_catchup=0,
    )
    assert problems(message, path="task") == {
        "task.triggers[0]": "no trigger kind set; expected one of cron, interval, at, after",
        "task.name": "'Bad' is not a task name; use [a-z0-9][a-z0-9._-]{0,127}",
        "task.command[1]": "10485760 bytes, at most 131072",
        "task.triggers[1].after[0]": "'Bad' is not a task name; use [a-z0-9][a-z0-9._-]{0,127}",
        "task.max_catchup": "must be between 1 and 100000, got 0",
    }


# --- tasks, runs, attempts, agents ------------------------------------------------------


@pytest.mark.parametrize("next_fire_at", [None, T0 + timedelta(hours=1)])
def test_task_round_trip(next_fire_at: datetime | None) -> None:
    task = Task(
        name="billing.export",
        version=3,
        paused=True,
        spec=SPECS[1],
        created_at=T0,
        updated_at=T0 + timedelta(days=1),
        next_fire_at=next_fire_at,
    )
    assert task_from_proto(task_to_proto(task)) == task


def test_task_version_round_trip() -> None:
    version = TaskVersion(version=2, spec=SPECS[0], created_at=T0)
    assert task_version_from_proto(task_version_to_proto(version)) == version


def test_run_round_trip_with_attempts() -> None:
    attempts = (
        Attempt(
            number=1,
            state=AttemptState.LOST,
            agent="agent-1",
            argv=("python", "x.py"),
            lease_token=2**40,
            started_at=T0,
            finished_at=T0 + timedelta(minutes=1),
            signal=9,
            message="lease expired",
        ),
        Attempt(
            number=2,
            state=AttemptState.SUCCEEDED,
            agent="agent-2",
            argv=("python", "x.py"),
            lease_token=7,
            started_at=T0 + timedelta(minutes=2),
            finished_at=T0 + timedelta(minutes=3),
            exit_code=0,
        ),
        Attempt(
            number=3,
            state=AttemptState.RUNNING,
            agent="agent-2",
            argv=(),
            lease_token=8,
            started_at=T0 + timedelta(minutes=4),
        ),
    )
    run = Run(
        id="5f0c6b9e-5a3e-4a57-9a43-1f0e3d2c1b0a",
        task="billing.export",
        task_version=3,
        occurrence=datetime(2025, 3, 1, 2, 30, tzinfo=timezone(timedelta(hours=11))),
        state=RunState.SUCCEEDED,
        cause="cron",
        created_at=T0,
        not_before=T0,
        params={"region": "au"},
        started_at=T0,
        finished_at=T0 + timedelta(minutes=3),
        attempts_used=2,
        max_attempts=3,
        reason="",
        agent="agent-2",
        attempts=attempts,
        outputs_json='{"rows": 10}',
        idempotency_key="key-1",
    )
    message = run_to_proto(run)
    assert message.attempts[1].HasField("exit_code")
    assert not message.attempts[0].HasField("exit_code")
    assert run_from_proto(pb.Run.FromString(message.SerializeToString())) == run


def test_run_without_optional_times() -> None:
    run = Run(
        id="r",
        task="t",
        task_version=1,
        occurrence=T0,
        state=RunState.QUEUED,
        cause="manual",
        created_at=T0,
        not_before=T0,
    )
    message = run_to_proto(run)
    assert not message.HasField("started_at")
    assert run_from_proto(message) == run


@pytest.mark.parametrize("seen", [None, T0])
def test_agent_round_trip(seen: datetime | None) -> None:
    agent = Agent(
        id="agent-1",
        hostname="host-1",
        labels={"pool": "billing"},
        capacity=4,
        version="0.1.0",
        state="connected",
        coordinator="127.0.0.1:7070",
        connected_at=seen,
        last_seen_at=seen,
        active_runs=2,
    )
    assert agent_from_proto(agent_to_proto(agent)) == agent


def test_attempt_round_trip() -> None:
    attempt = Attempt(
        number=1,
        state=AttemptState.TIMED_OUT,
        agent="a",
        argv=("x",),
        lease_token=1,
        started_at=T0,
        finished_at=T0,
        exit_code=-15,
    )
    assert attempt_from_proto(attempt_to_proto(attempt)) == attempt


@pytest.mark.parametrize("task", ["billing.export", None])
def test_audit_entry_round_trip(task: str | None) -> None:
    entry = AuditEntry(
        id=12,
        at=datetime(2025, 1, 31, 2, 30, 0, 123456, tzinfo=UTC),
        who="ci",
        role="operator",
        action="RunService/Trigger",
        task=task,
        run_id=None if task is None else "0b9c3c55-8a0e-4d7e-9a43-5f1c2d7e8a10",
        peer="ipv4:127.0.0.1:5000",
        outcome="NOT_FOUND",
        detail="task 'x' not found",
    )
    assert audit_entry_from_proto(audit_entry_to_proto(entry)) == entry


def test_an_explanation_round_trips_and_an_unknown_fact_kind_reads_as_unknown() -> None:
    occurrence = datetime(2026, 3, 1, 2, 30, tzinfo=UTC)
    facts = (
        Fact(kind=FactKind.DROPPED, message="no run: ...", ids={"reason": "paused"}),
        Fact(kind=FactKind.NOT_DUE, message="not due yet"),
    )
    explanation = Explanation(task="t", occurrence=occurrence, run=None, facts=facts)
    message = explanation_to_proto(explanation)
    assert not message.HasField("run")
    assert explanation_from_proto(message) == explanation
    message.facts.add(kind="from_a_newer_coordinator", message="m")
    assert explanation_from_proto(message).facts[-1].kind is FactKind.UNKNOWN
