"""The client and hydractl against a real gRPC server running a scripted double.

The double records every request with its metadata and answers from a small
script, so these tests see exactly what goes over the wire: fields, page
tokens, retries, failover and status mapping. End-to-end tests against the real
coordinator live in tests/e2e.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from harness.net import free_port
from hydra import wire
from hydra.client import (
    AlreadyExists,
    Client,
    FailedPrecondition,
    HydraError,
    InvalidArgument,
    LogChunk,
    NotFound,
    PermissionDenied,
    Run,
    RunState,
    Task,
    Unauthenticated,
    Unavailable,
    hydractl,
)
from hydra.domain import Agent
from hydra.domain import Task as RegisteredTask
from hydra.v1 import agent_service_pb2 as agent_pb
from hydra.v1 import agent_service_pb2_grpc as agent_grpc
from hydra.v1 import run_service_pb2 as run_pb
from hydra.v1 import run_service_pb2_grpc as run_grpc
from hydra.v1 import task_service_pb2 as task_pb
from hydra.v1 import task_service_pb2_grpc as task_grpc
from hydra.v1 import types_pb2 as pb

T0 = datetime(2025, 1, 31, 2, 30, tzinfo=UTC)
SPEC = Task(name="billing.export", command=("python", "export.py"))


def make_run(run_id: str = "r1", state: RunState = RunState.QUEUED, **changes: Any) -> Run:
    run = Run(
        id=run_id,
        task="billing.export",
        task_version=1,
        occurrence=T0,
        state=state,
        cause="manual",
        created_at=T0,
        not_before=T0,
    )
    return replace(run, **changes)


def make_task(name: str) -> pb.Task:
    registered = RegisteredTask(
        name=name, version=1, paused=False, spec=replace(SPEC, name=name), created_at=T0,
        updated_at=T0,
    )  # fmt: skip
    return wire.task_to_proto(registered)


@dataclass
class Call:
    method: str
    request: Any
    metadata: dict[str, str | bytes]


@dataclass
class Double:
    """Scripted TaskService, RunService and AgentService; records every call."""

    target: str = ""
    calls: list[Call] = field(default_factory=list)
    #: Statuses to answer, in order, before a method behaves normally.
    failures: dict[str, list[tuple[grpc.StatusCode, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    runs: dict[str, Run] = field(default_factory=dict)
    #: Runs a Get answers in turn for a run id (the last one repeats).
    run_sequence: dict[str, list[Run]] = field(default_factory=dict)
    watch_events: list[Run] = field(default_factory=list)
    watch_holds_open: bool = False
    watch_unimplemented: bool = False
    log_chunks: list[run_pb.LogChunk] = field(default_factory=list)

    def record(self, method: str, request: Message, context: grpc.ServicerContext) -> None:
        metadata = {item.key: item.value for item in context.invocation_metadata()}  # type: ignore[attr-defined]
        self.calls.append(Call(method, request, metadata))
        if self.failures[method]:
            code, message = self.failures[method].pop(0)
            context.abort(code, message)

    def requests(self, method: str) -> list[Any]:
        return [call.request for call in self.calls if call.method == method]


#: Task names and the next page token, by page token.
TASK_PAGES = {"": (["t0", "t1"], "p1"), "p1": (["t2", "t3"], "p2"), "p2": (["t4"], "")}


class TaskDouble(task_grpc.TaskServiceServicer):
    def __init__(self, double: Double) -> None:
        self.double = double

    def Apply(self, request: task_pb.ApplyTaskRequest, context: Any) -> Any:
        self.double.record("Apply", request, context)
        task = make_task(request.spec.name)
        task.spec.CopyFrom(request.spec)
        return task_pb.ApplyTaskResponse(task=task, changed=True, previous_version=0)

    def Get(self, request: task_pb.GetTaskRequest, context: Any) -> Any:
        self.double.record("Get", request, context)
        if request.name != "billing.export":
            context.abort(grpc.StatusCode.NOT_FOUND, f"task {request.name!r} not found")
        version = pb.TaskVersion(version=1, spec=make_task(request.name).spec)
        version.created_at.FromDatetime(T0)
        return task_pb.GetTaskResponse(task=make_task(request.name), versions=[version])

    def List(self, request: task_pb.ListTasksRequest, context: Any) -> Any:
        self.double.record("ListTasks", request, context)
        names, next_token = TASK_PAGES[request.page_token]
        tasks = [make_task(request.name_prefix + name) for name in names]
        return task_pb.ListTasksResponse(tasks=tasks, next_page_token=next_token)

    def Delete(self, request: task_pb.DeleteTaskRequest, context: Any) -> Any:
        self.double.record("Delete", request, context)
        return task_pb.DeleteTaskResponse(cancelled_runs=2)

    def Pause(self, request: task_pb.PauseTaskRequest, context: Any) -> Any:
        self.double.record("Pause", request, context)
        task = make_task(request.name)
        task.paused = True
        return task_pb.PauseTaskResponse(task=task)

    def Resume(self, request: task_pb.ResumeTaskRequest, context: Any) -> Any:
        self.double.record("Resume", request, context)
        return task_pb.ResumeTaskResponse(task=make_task(request.name))


class RunDouble(run_grpc.RunServiceServicer):
    def __init__(self, double: Double) -> None:
        self.double = double

    def Trigger(self, request: run_pb.TriggerRunRequest, context: Any) -> Any:
        self.double.record("Trigger", request, context)
        run = self.double.runs.get("r1") or make_run("r1")
        return run_pb.TriggerRunResponse(run=wire.run_to_proto(run), created=True)

    def Get(self, request: run_pb.GetRunRequest, context: Any) -> Any:
        self.double.record("GetRun", request, context)
        sequence = self.double.run_sequence.get(request.id)
        if sequence:
            run = sequence.pop(0) if len(sequence) > 1 else sequence[0]
        elif request.id in self.double.runs:
            run = self.double.runs[request.id]
        else:
            context.abort(grpc.StatusCode.NOT_FOUND, f"run {request.id!r} not found")
        return run_pb.GetRunResponse(run=wire.run_to_proto(run))

    def List(self, request: run_pb.ListRunsRequest, context: Any) -> Any:
        self.double.record("ListRuns", request, context)
        start = int(request.page_token or 0)
        runs = [make_run(f"r{start + i}") for i in range(min(2, request.page_size))]
        return run_pb.ListRunsResponse(
            runs=[wire.run_to_proto(run) for run in runs], next_page_token=str(start + 2)
        )

    def Retry(self, request: run_pb.RetryRunRequest, context: Any) -> Any:
        self.double.record("Retry", request, context)
        return run_pb.RetryRunResponse(run=wire.run_to_proto(make_run(request.id)))

    def Cancel(self, request: run_pb.CancelRunRequest, context: Any) -> Any:
        self.double.record("Cancel", request, context)
        run = make_run(request.id, RunState.CANCELLED, reason=request.reason)
        return run_pb.CancelRunResponse(run=wire.run_to_proto(run))

    def Backfill(self, request: run_pb.BackfillRequest, context: Any) -> Any:
        self.double.record("Backfill", request, context)
        start = wire.from_timestamp(getattr(request, "from"))
        occurrences = [wire.to_timestamp(start + timedelta(days=i)) for i in range(3)]
        created = [] if request.dry_run else [wire.run_to_proto(make_run("r9", cause="backfill"))]
        return run_pb.BackfillResponse(occurrences=occurrences, created=created, existing=2)

    def Watch(self, request: run_pb.WatchRunsRequest, context: Any) -> Iterator[Any]:
        self.double.record("Watch", request, context)
        if self.double.watch_unimplemented:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        for run in self.double.watch_events:
            yield run_pb.RunEvent(run=wire.run_to_proto(run))
        if self.double.watch_holds_open:
            ended = threading.Event()
            context.add_callback(ended.set)
            ended.wait(10)

    def TailLogs(self, request: run_pb.TailLogsRequest, context: Any) -> Iterator[Any]:
        self.double.record("TailLogs", request, context)
        yield from self.double.log_chunks


AGENT = Agent(
    id="a-1", hostname="h1", labels={"pool": "billing"}, capacity=4, version="0.1.0",
    state="connected", coordinator="c1", connected_at=T0, last_seen_at=T0,
)  # fmt: skip


class AgentDouble(agent_grpc.AgentServiceServicer):
    def __init__(self, double: Double) -> None:
        self.double = double

    def List(self, request: agent_pb.ListAgentsRequest, context: Any) -> Any:
        self.double.record("ListAgents", request, context)
        return agent_pb.ListAgentsResponse(agents=[wire.agent_to_proto(AGENT)])

    def Drain(self, request: agent_pb.DrainAgentRequest, context: Any) -> Any:
        self.double.record("Drain", request, context)
        agent = wire.agent_to_proto(AGENT)
        agent.id, agent.state = request.agent_id, "draining"
        return agent_pb.DrainAgentResponse(agent=agent)

    def Connect(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the client double")
        yield from ()


@pytest.fixture
def double() -> Iterator[Double]:
    """A gRPC server on 127.0.0.1 serving the scripted double."""
    state = Double()
    with ThreadPoolExecutor(max_workers=8) as pool:
        server = grpc.server(pool)
        task_grpc.add_TaskServiceServicer_to_server(TaskDouble(state), server)
        run_grpc.add_RunServiceServicer_to_server(RunDouble(state), server)
        agent_grpc.add_AgentServiceServicer_to_server(AgentDouble(state), server)
        state.target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        server.start()
        yield state
        server.stop(None).wait()


@pytest.fixture
def client(double: Double) -> Iterator[Client]:
    with Client(double.target, token="s3cret", timeout=5) as client:
        yield client


# --- requests -----------------------------------------------------------------


def test_trigger_sends_params_key_occurrence_and_token(double: Double, client: Client) -> None:
    run, created = client.trigger(
        "billing.export", params={"region": "au"}, idempotency_key="k1", occurrence=T0
    )
    assert (run, created) == (make_run("r1"), True)
    [call] = [c for c in double.calls if c.method == "Trigger"]
    assert call.request.task == "billing.export"
    assert dict(call.request.params) == {"region": "au"}
    assert call.request.idempotency_key == "k1"
    assert wire.from_timestamp(call.request.occurrence) == T0
    assert call.metadata["authorization"] == "Bearer s3cret"


def test_list_tasks_follows_page_tokens(double: Double, client: Client) -> None:
    tasks = client.list_tasks(prefix="b.")
    assert [task.name for task in tasks] == ["b.t0", "b.t1", "b.t2", "b.t3", "b.t4"]
    requests = double.requests("ListTasks")
    assert [r.page_token for r in requests] == ["", "p1", "p2"]
    assert {r.name_prefix for r in requests} == {"b."}


def test_list_runs_sends_states_and_stops_at_the_limit(double: Double, client: Client) -> None:
    runs = client.list_runs(task="billing.export", states=["FAILED", RunState.SKIPPED], limit=3)
    assert [run.id for run in runs] == ["r0", "r1", "r2"]
    requests = double.requests("ListRuns")
    assert [(r.page_token, r.page_size) for r in requests] == [("", 3), ("2", 1)]
    assert list(requests[0].states) == [pb.RUN_STATE_FAILED, pb.RUN_STATE_SKIPPED]
    assert requests[0].task == "billing.export"


def test_apply_sends_each_spec_and_reports_what_changed(double: Double, client: Client) -> None:
    [result] = client.apply(SPEC, dry_run=True)
    assert (result.task.name, result.changed, result.previous_version) == (SPEC.name, True, 0)
    assert result.action == "created"
    [request] = double.requests("Apply")
    assert request.dry_run is True
    assert wire.task_spec_from_proto(request.spec) == SPEC


def test_apply_validates_every_spec_before_sending_any(double: Double, client: Client) -> None:
    bad = [replace(SPEC, name="Bad Name"), SPEC, replace(SPEC, command=())]
    with pytest.raises(InvalidArgument) as raised:
        client.apply(bad)
    assert [p.path for p in raised.value.problems] == ["[0].name", "[2].command"]
    assert double.calls == []


def test_get_task_versions_logs_and_agents(double: Double, client: Client) -> None:
    details = client.get_task("billing.export", include_versions=True)
    assert details.task.spec == SPEC
    assert [v.version for v in details.versions] == [1]
    assert double.requests("Get")[0].include_versions is True
    double.log_chunks = [
        run_pb.LogChunk(attempt=1, stream=run_pb.OUTPUT_STREAM_STDOUT, data=b"out"),
        run_pb.LogChunk(attempt=2, stream=run_pb.OUTPUT_STREAM_STDERR, data=b"err"),
    ]
    assert list(client.tail_logs("r1", attempt=2, follow=True)) == [
        LogChunk(attempt=1, stream="stdout", data=b"out"),
        LogChunk(attempt=2, stream="stderr", data=b"err"),
    ]
    [request] = double.requests("TailLogs")
    assert (request.run_id, request.attempt, request.follow) == ("r1", 2, True)
    [agent] = client.list_agents(include_disconnected=True)
    assert (agent.id, dict(agent.labels)) == ("a-1", {"pool": "billing"})
    assert double.requests("ListAgents")[0].include_disconnected is True


def test_task_steering_backfill_and_drain(double: Double, client: Client) -> None:
    assert client.delete_task("billing.export", force=True) == 2
    assert client.pause("billing.export").paused is True
    assert client.resume("billing.export").paused is False
    result = client.backfill("billing.export", T0, T0 + timedelta(days=2))
    assert result.occurrences == [T0 + timedelta(days=i) for i in range(3)]
    assert [(run.id, run.cause) for run in result.created] == [("r9", "backfill")]
    assert result.existing == 2
    assert client.backfill("billing.export", T0, T0, dry_run=True).created == []
    assert client.drain_agent("a-7").state == "draining"
    [delete] = double.requests("Delete")
    assert (delete.name, delete.force) == ("billing.export", True)
    first = double.requests("Backfill")[0]
    assert wire.from_timestamp(getattr(first, "from")) == T0
    assert wire.from_timestamp(first.to) == T0 + timedelta(days=2)
    assert [r.dry_run for r in double.requests("Backfill")] == [False, True]
    assert double.requests("Drain")[0].agent_id == "a-7"


# --- statuses -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
        (grpc.StatusCode.ALREADY_EXISTS, AlreadyExists),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.DATA_LOSS, HydraError),
    ],
)
def test_statuses_map_to_errors_with_the_servers_message(
    code: grpc.StatusCode, error_type: type[HydraError], double: Double, client: Client
) -> None:
    message = "spec.triggers[0].cron: 6 fields expected"
    double.failures["Cancel"].append((code, message))
    with pytest.raises(HydraError) as raised:
        client.cancel("r1")
    assert type(raised.value) is error_type
    assert raised.value.status_code_name == code.name
    assert message in raised.value.message
    if error_type is not HydraError:
        assert raised.value.message == message


def test_not_found_from_a_real_handler(client: Client) -> None:
    with pytest.raises(NotFound, match="task 'nope' not found"):
        client.get_task("nope")


# --- failover and retries -----------------------------------------------------


def test_fails_over_from_a_dead_first_target(double: Double) -> None:
    dead = f"127.0.0.1:{free_port()}"
    double.runs["r1"] = make_run("r1")
    with Client([dead, double.target], timeout=5) as client:
        assert client.get_run("r1").id == "r1"
        # Safe without a key too: nothing was sent to the dead target.
        client.trigger("billing.export")
        assert client.targets == (dead, double.target)
    assert len(double.requests("Trigger")) == 1


def test_all_targets_dead_is_unavailable_naming_them() -> None:
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    with Client(",".join(dead), timeout=5) as client, pytest.raises(Unavailable) as raised:
        client.list_tasks()
    assert raised.value.message.startswith("cannot reach any coordinator")
    assert dead[0] in raised.value.message and dead[1] in raised.value.message


def test_idempotent_calls_are_retried_after_one_unavailable(double: Double, client: Client) -> None:
    double.runs["r1"] = make_run("r1")
    double.failures["GetRun"].append((grpc.StatusCode.UNAVAILABLE, "restarting"))
    assert client.get_run("r1").id == "r1"
    assert len(double.requests("GetRun")) == 2

    double.failures["Trigger"].append((grpc.StatusCode.UNAVAILABLE, "restarting"))
    client.trigger("billing.export", idempotency_key="k1")
    assert [r.idempotency_key for r in double.requests("Trigger")] == ["k1", "k1"]


@pytest.mark.parametrize(
    ("method", "call"),
    [
        ("Trigger", lambda client: client.trigger("billing.export")),
        ("Retry", lambda client: client.retry("r1")),
        ("Cancel", lambda client: client.cancel("r1")),
    ],
)
def test_unsafe_calls_are_never_retried(
    method: str, call: Any, double: Double, client: Client
) -> None:
    double.failures[method].append((grpc.StatusCode.UNAVAILABLE, "connection reset"))
    with pytest.raises(Unavailable, match="connection reset"):
        call(client)
    assert len(double.requests(method)) == 1


# --- waiting ------------------------------------------------------------------


def test_wait_polls_only_when_watch_is_unimplemented(double: Double, client: Client) -> None:
    double.watch_unimplemented = True
    double.run_sequence["r1"] = [
        make_run(state=RunState.RUNNING),
        make_run(state=RunState.RUNNING),
        make_run(state=RunState.SUCCEEDED),
    ]
    assert client.wait("r1", timeout=10).state is RunState.SUCCEEDED
    assert len(double.requests("Watch")) == 1
    assert len(double.requests("GetRun")) == 3


@pytest.mark.parametrize("cut", ["unavailable", "stream ended"])
def test_wait_rechecks_the_run_when_the_watch_stream_is_lost(
    cut: str, double: Double, client: Client
) -> None:
    if cut == "unavailable":
        double.failures["Watch"].append((grpc.StatusCode.UNAVAILABLE, "coordinator stopping"))
    double.run_sequence["r1"] = [make_run(state=RunState.RUNNING), make_run(state=RunState.FAILED)]
    assert client.wait("r1", timeout=10).state is RunState.FAILED
    assert len(double.requests("Watch")) == 1
    assert len(double.requests("GetRun")) == 2


def test_wait_gives_up_after_its_timeout(double: Double, client: Client) -> None:
    double.runs["r1"] = make_run(state=RunState.RUNNING)
    double.watch_holds_open = True
    with pytest.raises(TimeoutError, match="run r1 is not finished yet"):
        client.wait("r1", timeout=0.5)


@pytest.mark.parametrize(("final", "code"), [(RunState.FAILED, 1), (RunState.SUCCEEDED, 0)])
def test_hydractl_run_wait_exit_code_follows_the_watch_stream(
    final: RunState, code: int, double: Double, capsys: pytest.CaptureFixture[str]
) -> None:
    double.runs["r1"] = make_run(state=RunState.QUEUED)
    double.watch_events = [
        make_run(state=RunState.RUNNING, attempts_used=1),
        make_run(state=final, attempts_used=1, started_at=T0, finished_at=T0 + timedelta(1)),
    ]
    argv = ["--coordinator", double.target, "run", "billing.export", "--param", "day=1", "--wait"]
    assert hydractl.main(argv) == code
    captured = capsys.readouterr()
    assert captured.out == "r1\n"
    assert captured.err.startswith(f"run r1 {final} in 1d00h after 1/1 attempts")
    [watch] = double.requests("Watch")
    assert watch.run_id == "r1"
    assert dict(double.requests("Trigger")[0].params) == {"day": "1"}


def test_hydractl_apply_prints_one_line_per_task(
    double: Double, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text("name: a\ncommand: [echo, a]\n---\nname: b\ncommand: [echo, b]\n")
    assert hydractl.main(["--coordinator", double.target, "apply", "-f", str(path)]) == 0
    assert capsys.readouterr().out == "created a v1\ncreated b v1\n"
    assert [r.spec.name for r in double.requests("Apply")] == ["a", "b"]
