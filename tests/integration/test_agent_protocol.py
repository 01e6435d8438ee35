"""The agent against a scripted coordinator over real gRPC, running real processes.

The coordinator here is a small test double that records what the agent sends
and answers as told; the real coordinator is tested on its own.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.duration_pb2 import Duration

import hydra.agent
from harness.net import free_port
from harness.processes import is_alive
from hydra import __version__
from hydra.agent import AgentConfig, AgentDaemon
from hydra.v1 import agent_service_pb2 as pb
from hydra.v1 import agent_service_pb2_grpc, run_service_pb2, types_pb2

from support.proc import eventually

Context = grpc.aio.ServicerContext[Any, Any]

HEARTBEAT_INTERVAL = 0.1
LEASE_TTL = 1.0

# --- process helpers (a copy of the unit tests') --------------------------------


# --- the scripted coordinator ------------------------------------------------------


def seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromTimedelta(timedelta(seconds=value))
    return duration


def ref(run_id: str, token: int = 1) -> pb.LeaseRef:
    return pb.LeaseRef(run_id=run_id, lease_token=token)


class ScriptedCoordinator(agent_service_pb2_grpc.AgentServiceServicer):
    """Welcomes agents, records their messages, acknowledges as configured."""

    def __init__(self, name: str = "coordinator-a") -> None:
        self.name = name
        self.lease_ttl = LEASE_TTL
        self.ack_heartbeats = True
        self.ack_reports = True
        self.revoke_on_welcome: list[pb.LeaseRef] = []
        self.revoke_on_heartbeat: list[pb.LeaseRef] = []
        self.required_token: str | None = None
        self.received: list[pb.AgentMessage] = []
        self.metadata: list[dict[str, str]] = []
        self._outgoing: asyncio.Queue[pb.CoordinatorMessage | None] | None = None

    # The agent's stream ------------------------------------------------------------

    async def Connect(
        self, request_iterator: AsyncIterator[pb.AgentMessage], context: Context
    ) -> AsyncIterator[pb.CoordinatorMessage]:
        metadata = {key: str(value) for key, value in context.invocation_metadata() or ()}
        self.metadata.append(metadata)
        if self.required_token and metadata.get("authorization") != f"Bearer {self.required_token}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad token")
        hello = await anext(request_iterator)
        self.received.append(hello)
        outgoing: asyncio.Queue[pb.CoordinatorMessage | None] = asyncio.Queue()
        self._outgoing = outgoing
        yield pb.CoordinatorMessage(
            welcome=pb.Welcome(
                coordinator_id=self.name,
                heartbeat_interval=seconds(HEARTBEAT_INTERVAL),
                lease_ttl=seconds(self.lease_ttl),
                revoked=self.revoke_on_welcome,
            )
        )
        reader = asyncio.create_task(self._consume(request_iterator, outgoing))
        try:
            while (message := await outgoing.get()) is not None:
                yield message
        finally:
            reader.cancel()

    async def _consume(
        self,
        request_iterator: AsyncIterator[pb.AgentMessage],
        outgoing: asyncio.Queue[pb.CoordinatorMessage | None],
    ) -> None:
        async for message in request_iterator:
            self.received.append(message)
            kind = message.WhichOneof("body")
            if kind == "heartbeat" and self.ack_heartbeats:
                revoked, self.revoke_on_heartbeat = self.revoke_on_heartbeat, []
                ack = pb.HeartbeatAck(sequence=message.heartbeat.sequence, revoked=revoked)
                outgoing.put_nowait(pb.CoordinatorMessage(heartbeat_ack=ack))
            elif kind == "attempt_finished" and self.ack_reports:
                self.acknowledge(message.attempt_finished.lease, outgoing)
        outgoing.put_nowait(None)  # the agent closed its side: end ours

    async def List(self, request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")

    async def Drain(self, request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")

    # The test's controls -------------------------------------------------------------

    def send(self, **body: Any) -> None:
        """Sends a CoordinatorMessage with ``body`` on the current stream."""
        assert self._outgoing is not None, "no agent connected"
        self._outgoing.put_nowait(pb.CoordinatorMessage(**body))

    def acknowledge(
        self, lease: pb.LeaseRef, outgoing: asyncio.Queue[Any] | None = None, accepted: bool = True
    ) -> None:
        ack = pb.ReportAck(lease=lease, accepted=accepted, reason="" if accepted else "stale")
        queue = outgoing or self._outgoing
        assert queue is not None, "no agent connected"
        queue.put_nowait(pb.CoordinatorMessage(report_ack=ack))

    def of_kind(self, kind: str) -> list[Any]:
        """Bodies of the received messages of one kind, in order."""
        return [getattr(m, kind) for m in self.received if m.WhichOneof("body") == kind]

    def finished(self, run_id: str) -> list[pb.AttemptFinished]:
        return [f for f in self.of_kind("attempt_finished") if f.lease.run_id == run_id]

    def started(self, run_id: str) -> list[pb.AttemptStarted]:
        return [s for s in self.of_kind("attempt_started") if s.lease.run_id == run_id]

    def checked(self, run_id: str) -> list[pb.PreconditionsChecked]:
        return [c for c in self.of_kind("preconditions_checked") if c.lease.run_id == run_id]

    def rejected(self, run_id: str) -> list[pb.LeaseRejected]:
        return [r for r in self.of_kind("lease_rejected") if r.lease.run_id == run_id]

    def bodies(self, run_id: str) -> list[str]:
        """Kinds of the messages about one run, in order (heartbeats left out)."""
        kinds: list[str] = []
        for message in self.received:
            kind = message.WhichOneof("body")
            if kind is None or kind in ("hello", "heartbeat"):
                continue
            if getattr(message, kind).lease.run_id == run_id:
                kinds.append(kind)
        return kinds

    def output(self, run_id: str, stream: int) -> bytes:
        chunks = self.of_kind("output")
        return b"".join(c.data for c in chunks if c.lease.run_id == run_id and c.stream == stream)

    def heartbeats_since(self, count: int) -> list[pb.Heartbeat]:
        return self.of_kind("heartbeat")[count:]


def offer(run_id: str, *argv: str, token: int = 1, **fields: Any) -> dict[str, Any]:
    """The body of a LeaseOffer message, for ``ScriptedCoordinator.send``."""
    lease_offer = pb.LeaseOffer(
        lease=ref(run_id, token),
        task="demo.task",
        attempt=1,
        argv=argv,
        kill_grace=seconds(0.5),
        **fields,
    )
    lease_offer.occurrence.FromDatetime(datetime(2024, 5, 1, 2, 30, tzinfo=UTC))
    return {"lease": lease_offer}


def file_exists(path: Path) -> types_pb2.Precondition:
    return types_pb2.Precondition(file=types_pb2.FileCheck(path=str(path)))


def command_succeeds(*argv: str) -> types_pb2.Precondition:
    return types_pb2.Precondition(command=types_pb2.CommandCheck(argv=argv))


def waits_for(go: Path, pid_file: Path) -> types_pb2.Precondition:
    """A command check that records its pid, then holds until ``go`` exists."""
    script = f"echo $$ > {pid_file}; while [ ! -e {go} ]; do sleep 0.02; done"
    return command_succeeds("sh", "-c", script)


def pid_in(path: Path) -> int | None:
    text = path.read_text().strip() if path.exists() else ""
    return int(text) if text else None


# --- fixtures ---------------------------------------------------------------------


@dataclass
class Server:
    coordinator: ScriptedCoordinator
    server: grpc.aio.Server
    target: str


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    """Starts scripted coordinators; stops them after the test."""
    started: list[grpc.aio.Server] = []

    async def start(name: str = "coordinator-a", port: int = 0) -> Server:
        coordinator = ScriptedCoordinator(name)
        server = grpc.aio.server()
        agent_service_pb2_grpc.add_AgentServiceServicer_to_server(coordinator, server)
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        started.append(server)
        return Server(coordinator, server, f"127.0.0.1:{bound}")

    yield start
    for server in started:
        await server.stop(None)


@dataclass
class Agent:
    daemon: AgentDaemon
    task: asyncio.Task[int]


@pytest.fixture
async def agents(run_id: str) -> AsyncIterator[Callable[..., Agent]]:
    """Runs AgentDaemons in-process; stops them (killing their attempts) after the test."""
    running: list[Agent] = []

    def start(*targets: str, **overrides: Any) -> Agent:
        config = AgentConfig(
            targets=list(targets),
            agent_id="agent-1",
            hostname="host-1",
            labels={"pool": "test"},
            capacity=2,
            drain_grace=timedelta(seconds=5),
            reconnect_max_backoff=timedelta(seconds=0.2),
            default_kill_grace=timedelta(seconds=0.5),
        )
        daemon = AgentDaemon(replace(config, **overrides))
        agent = Agent(daemon, asyncio.create_task(daemon.run()))
        running.append(agent)
        return agent

    yield start
    for agent in running:
        agent.daemon.request_stop()
        await asyncio.wait_for(agent.task, 10)


# --- the tests ----------------------------------------------------------------------


def test_public_names() -> None:
    assert hydra.agent.__all__ == ["AgentConfig", "AgentDaemon", "run_agent"]


def test_config_from_the_environment() -> None:
    environ = {"HYDRA_COORDINATORS": "a:7070, b:7070", "HYDRA_TOKEN": "t0ken"}

    config = AgentConfig.from_environ(environ, capacity=3)

    assert (config.targets, config.token, config.capacity) == (("a:7070", "b:7070"), "t0ken", 3)
    assert config.drain_grace == timedelta(minutes=5)
    assert config.default_kill_grace == timedelta(seconds=10)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [({"targets": []}, "at least one coordinator"), ({"capacity": 0}, "capacity")],
)
def test_config_refuses_nonsense(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        AgentConfig(**{"targets": ["a:1"], **fields})


async def test_hello_introduces_the_agent(servers: Any, agents: Any) -> None:
    a = await servers()
    agents(a.target, token="s3cret", capacity=3)

    await eventually(lambda: a.coordinator.of_kind("hello"))

    hello = a.coordinator.of_kind("hello")[0]
    assert (hello.agent_id, hello.hostname, dict(hello.labels)) == (
        "agent-1",
        "host-1",
        {"pool": "test"},
    )
    assert (hello.capacity, hello.version, hello.draining) == (3, __version__, False)
    assert list(hello.held_leases) == []
    assert a.coordinator.metadata[0]["authorization"] == "Bearer s3cret"


async def test_an_offer_is_run_and_reported(servers: Any, agents: Any, run_id: str) -> None:
    a = await servers()
    agents(a.target)
    await eventually(lambda: a.coordinator.of_kind("heartbeat"))
    script = 'echo "hello $HYDRA_TASK"; echo oops >&2; echo \'{"rows": 3}\' > "$HYDRA_OUTPUT"'

    a.coordinator.send(**offer(run_id, "sh", "-c", script, token=7))
    await eventually(lambda: a.coordinator.finished(run_id))

    [started] = a.coordinator.started(run_id)
    assert started.lease == ref(run_id, 7)
    assert list(started.argv) == ["sh", "-c", script]
    assert started.pid > 0 and started.HasField("started_at")
    stdout = a.coordinator.output(run_id, run_service_pb2.OUTPUT_STREAM_STDOUT)
    assert stdout == b"hello demo.task\n"
    assert a.coordinator.output(run_id, run_service_pb2.OUTPUT_STREAM_STDERR) == b"oops\n"
    [finished] = a.coordinator.finished(run_id)
    assert finished.lease == ref(run_id, 7)
    assert finished.outcome == pb.ATTEMPT_OUTCOME_SUCCEEDED
    assert finished.HasField("exit_code") and finished.exit_code == 0
    assert not finished.HasField("signal")
    assert finished.started_at == started.started_at
    assert finished.finished_at.ToDatetime() >= finished.started_at.ToDatetime()
    assert list(finished.argv) == ["sh", "-c", script]
    assert finished.outputs_json == '{"rows": 3}'
    kinds = [
        m.WhichOneof("body") for m in a.coordinator.received if m.WhichOneof("body") != "heartbeat"
    ]
    assert kinds.index("attempt_started") < kinds.index("output") < kinds.index("attempt_finished")


async def test_a_spawn_failure_is_reported_as_failed(
    servers: Any, agents: Any, run_id: str
) -> None:
    a = await servers()
    agents(a.target)
    await eventually(lambda: a.coordinator.of_kind("heartbeat"))

    a.coordinator.send(**offer(run_id, "/nonexistent/program"))
    await eventually(lambda: a.coordinator.finished(run_id))

    assert a.coordinator.started(run_id) == []
    [finished] = a.coordinator.finished(run_id)
    assert finished.outcome == pb.ATTEMPT_OUTCOME_FAILED
    assert finished.message.startswith("cannot start: ")
    assert finished.started_at == finished.finished_at


async def test_capacity_is_enforced_with_lease_rejected(
    servers: Any, agents: Any, run_id: str
) -> None:
    a = await servers()
    agents(a.target, capacity=1)
    await eventually(lambda: a.coordinator.of_kind("heartbeat"))

    a.coordinator.send(**offer(f"{run_id}-1", "sleep", "1000"))
    a.coordinator.send(**offer(f"{run_id}-2", "sleep", "1000"))
    await eventually(lambda: a.coordinator.of_kind("lease_rejected"))

    [rejected] = a.coordinator.of_kind("lease_rejected")
    assert rejected.lease == ref(f"{run_id}-2")
    assert rejected.reason == "no free slot (capacity 1)"
    assert len(a.coordinator.started(f"{run_id}-1")) == 1


async def test_heartbeats_carry_held_leases_and_a_revoked_lease_is_killed(
    servers: Any, agents: Any, run_id: str
) -> None:
    a = await servers()
    agents(a.target)
    await eventually(lambda: a.coordinator.of_kind("heartbeat"))
    a.coordinator.send(**offer(run_id, "sleep", "1000"))
    await eventually(lambda: a.coordinator.started(run_id))
    pid = a.coordinator.started(run_id)[0].pid

    await eventually(lambda: ref(run_id) in a.coordinator.of_kind("heartbeat")[-1].leases)
    a.coordinator.revoke_on_heartbeat = [ref(run_id)]
    await eventually(lambda: not is_alive(pid))
    seen = len(a.coordinator.of_kind("heartbeat"))
    await eventually(lambda: len(a.coordinator.heartbeats_since(seen)) >= 2)

    assert all(list(h.leases) == [] for h in a.coordinator.heartbeats_since(seen))
    assert a.coordinator.finished(run_id) == []  # revoked: nothing to report
    heartbeats = a.coordinator.of_kind("heartbeat")
    assert [h.sequence for h in heartbeats] == list(range(1, len(heartbeats) + 1))


async def test_cancel_kills_and_reports_cancelled(servers: Any, agents: Any, run_id: str) -> None:
    a = await servers()
    agents(a.target)
    await eventually(lambda: a.coordinator.of_kind("heartbeat"))
    a.coordinator.send(**offer(run_id, "sleep", "1000"))
    await eventually(lambda: a.coordinator.started(run_id))

    a.coordinator.send(cancel=pb.CancelAttempt(lease=ref(run_id), reason="by alice"))
    await eventually(lambda: a.coordinator.finished(run_id))

    [finished] = a.coordinator.finished(run_id)
    assert finished.outcome == pb.ATTEMPT_OUTCOME_CANCELLED
    assert finished.message == "cancelled: by alice"
    assert finished.signal == signal.SIGTERM
    assert not is_alive(a.coordinator.started(run_id)[0].pid)


async def test_a_report_is_resent_to_the_next_coordinator_until_acknowledged(
    servers: Any, agents: Any, run_id: str
) -> None:
    a = await servers("coordinator-a")
    b_port = free_port()
    agents(a.target, f"127.0.0.1:{b_port}")
    await eventually(lambda: a.coordinator.of_kind("heartbeat"))
    a.coordinator.ack_reports = False
    a.coordinator.send(**offer(run_id, "sh", "-c", "exit 3"))
    await eventually(lambda: a.coordinator.finished(run_id))

    await a.server.stop(None)
    b = await servers("coordinator-b", port=b_port)
    b.coordinator.ack_reports = False
    await eventually(lambda: b.coordinator.finished(run_id))

    [hello] = b.coordinator.of_kind("hello")
    assert list(hello.held_leases) == [ref(run_id)]
    [report] = b.coordinator.finished(run_id)
    assert (report.outcome, report.exit_code) == (pb.ATTEMPT_OUTCOME_FAILED, 3)
    seen = len(b.coordinator.of_kind("heartbeat"))
    await eventually(lambda: b.coordinator.heartbeats_since(seen))
    assert list(b.coordinator.heartbeats_since(seen)[0].leases) == [ref(run_id)]

    b.coordinator.acknowledge(ref(run_id))
    await eventually(lambda: list(b.coordinator.of_kind("heartbeat")[-1].leases) == [])


async def test_an_attempt_ending_while_disconnected_is_reported_after_reconnecting(
    servers: Any, agents: Any, run_id: str, tmp_path: Path
) -> None:
    a = await servers("coordinator-a")
    a.coordinator.lease_ttl = 30  # no fencing in this test
    b_port = free_port()
    agents(a.target, f"127.0.0.1:{b_port}")
    await eventually(lambda: a.coordinator.of_kind("heartbeat"))
    go = tmp_path / "go"
    script = f"while [ ! -e {go} ]; do sleep 0.02; done; echo done"
    a.coordinator.send(**offer(run_id, "sh", "-c", script))
    await eventually(lambda: a.coordinator.started(run_id))
    pid = a.coordinator.started(run_id)[0].pid

    await a.server.stop(None)
    go.touch()
    await eventually(lambda: not is_alive(pid))
    b = await servers("coordinator-b", port=b_port)
    await eventually(lambda: b.coordinator.finished(run_id))

    assert a.coordinator.finished(run_id) == []
    [hello] = b.coordinator.of_kind("hello")
    assert list(hello.held_leases) == [ref(run_id)]
    [finished] = b.coordinator.finished(run_id)
    assert (finished.outcome, finished.exit_code) == (pb.ATTEMPT_OUTCOME_SUCCEEDED, 0)


async def test_a_revoked_lease_in_welcome_drops_its_pending_report(
    servers: Any, agents: Any, run_id: str
) -> None:
    a = await servers("coordinator-a")
    b_port = free_port()
    agents(a.target, f"127.0.0.1:{b_port}")
    await eventually(lambda: a.coordinator.of_kind("heartbeat"))
    a.coordinator.ack_reports = False
    a.coordinator.send(**offer(run_id, "true"))
    await eventually(lambda: a.coordinator.finished(run_id))

    await a.server.stop(None)
    b = await servers("coordinator-b", port=b_port)
    b.coordinator.revoke_on_welcome = [ref(run_id)]
    await eventually(lambda: len(b.coordinator.of_kind("heartbeat")) >= 2)

    assert b.coordinator.finished(run_id) == []
    assert list(b.coordinator.of_kind("heartbeat")[-1].leases) == []


async def test_an_agent_that_cannot_renew_fences_itself(
    servers: Any, agents: Any, run_id: str
) -> None:
    a = await servers()
    agents(a.target)
    await eventually(
        lambda: a.coordinator.of_kind("heartbeat_ack") or a.coordinator.of_kind("heartbeat")
    )
    a.coordinator.send(**offer(run_id, "sleep", "1000"))
    await eventually(lambda: a.coordinator.started(run_id))
    pid = a.coordinator.started(run_id)[0].pid

    a.coordinator.ack_heartbeats = False
    cut_off = time.monotonic()
    await eventually(lambda: not is_alive(pid), within=LEASE_TTL + 2)
    killed_after = time.monotonic() - cut_off
    a.coordinator.ack_heartbeats = True
    await eventually(lambda: a.coordinator.finished(run_id))

    assert LEASE_TTL - 2 * HEARTBEAT_INTERVAL <= killed_after <= LEASE_TTL + 1
    finished = a.coordinator.finished(run_id)[-1]
    assert finished.outcome == pb.ATTEMPT_OUTCOME_FENCED
    assert finished.message == "lease could not be renewed for 1s; killed to avoid a duplicate"


async def test_drain_from_the_coordinator_finishes_work_then_exits(
    servers: Any, agents: Any, run_id: str
) -> None:
    a = await servers()
    agent = agents(a.target)
    await eventually(lambda: a.coordinator.of_kind("heartbeat"))
    a.coordinator.send(**offer(run_id, "sleep", "0.5"))
    await eventually(lambda: a.coordinator.started(run_id))

    a.coordinator.send(drain=pb.Drain(reason="maintenance"))
    await eventually(lambda: a.coordinator.of_kind("heartbeat")[-1].draining)
    a.coordinator.send(**offer(f"{run_id}-late", "true"))
    exit_code = await asyncio.wait_for(agent.task, 10)

    assert exit_code == 0
    assert a.coordinator.finished(run_id)[0].outcome == pb.ATTEMPT_OUTCOME_SUCCEEDED
    [rejected] = a.coordinator.of_kind("lease_rejected")
    assert (rejected.lease, rejected.reason) == (ref(f"{run_id}-late"), "the agent is draining")


async def test_drain_kills_what_outlives_the_grace(servers: Any, agents: Any, run_id: str) -> None:
    a = await servers()
    agent = agents(a.target, drain_grace=timedelta(seconds=0.5))
    await eventually(lambda: a.coordinator.of_kind("heartbeat"))
    a.coordinator.send(**offer(run_id, "sleep", "1000"))
    await eventually(lambda: a.coordinator.started(run_id))

    agent.daemon.request_drain()
    exit_code = await asyncio.wait_for(agent.task, 10)

    assert exit_code == 0
    assert any(h.draining for h in a.coordinator.of_kind("heartbeat"))
    [finished] = a.coordinator.finished(run_id)
    assert finished.outcome == pb.ATTEMPT_OUTCOME_CANCELLED
    assert finished.message == "agent drained: the drain grace is over"


async def test_drain_to_reconnect_elsewhere_keeps_attempts_running(
    servers: Any, agents: Any, run_id: str
) -> None:
    a = await servers("coordinator-a")
    b = await servers("coordinator-b")
    agents(a.target, b.target)
    await eventually(lambda: a.coordinator.of_kind("heartbeat"))
    a.coordinator.send(**offer(run_id, "sleep", "1000"))
    await eventually(lambda: a.coordinator.started(run_id))

    a.coordinator.send(drain=pb.Drain(reason="coordinator restart", reconnect_elsewhere=True))
    await eventually(lambda: b.coordinator.of_kind("heartbeat"))

    [hello] = b.coordinator.of_kind("hello")
    assert list(hello.held_leases) == [ref(run_id)]
    assert not hello.draining
    assert is_alive(a.coordinator.started(run_id)[0].pid)


async def test_an_offer_repeated_starts_nothing_new(servers: Any, agents: Any, run_id: str) -> None:
    a = await servers()
    agents(a.target)
    await eventually(lambda: a.coordinator.of_kind("heartbeat"))

    a.coordinator.send(**offer(run_id, "sleep", "1000"))
    await eventually(lambda: a.coordinator.started(run_id))
    a.coordinator.send(**offer(run_id, "sleep", "1000"))
    await eventually(lambda: len(a.coordinator.started(run_id)) == 2)

    first, second = a.coordinator.started(run_id)
    assert first.pid == second.pid


async def test_a_refusing_coordinator_makes_the_agent_exit_with_1(
    servers: Any, agents: Any
) -> None:
    a = await servers()
    a.coordinator.required_token = "right"
    agent = agents(a.target, token="wrong")

    assert await asyncio.wait_for(agent.task, 10) == 1


AGENT_SCRIPT = textwrap.dedent(
    """
    import asyncio, logging, sys
    from datetime import timedelta
    from hydra.agent import AgentConfig, run_agent

    logging.basicConfig(level=logging.INFO)
    config = AgentConfig(targets=[sys.argv[1]], agent_id="agent-sub", capacity=1,
                         drain_grace=timedelta(seconds=10),
                         reconnect_max_backoff=timedelta(seconds=0.2))
    sys.exit(asyncio.run(run_agent(config)))
    """
)


async def test_sigterm_drains_a_real_agent_process(servers: Any, run_id: str) -> None:
    a = await servers()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", AGENT_SCRIPT, a.target, stderr=asyncio.subprocess.PIPE
    )
    try:
        await eventually(lambda: a.coordinator.of_kind("heartbeat"), within=10)
        a.coordinator.send(**offer(run_id, "sleep", "0.5"))
        await eventually(lambda: a.coordinator.started(run_id))

        process.send_signal(signal.SIGTERM)
        await eventually(lambda: a.coordinator.of_kind("heartbeat")[-1].draining)
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 0, stderr.decode()
    assert a.coordinator.finished(run_id)[0].outcome == pb.ATTEMPT_OUTCOME_SUCCEEDED
    assert b"draining (got SIGTERM)" in stderr


async def test_a_second_sigint_kills_everything_and_exits(servers: Any, run_id: str) -> None:
    a = await servers()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", AGENT_SCRIPT, a.target, stderr=asyncio.subprocess.PIPE
    )
    try:
        await eventually(lambda: a.coordinator.of_kind("heartbeat"), within=10)
        a.coordinator.send(**offer(run_id, "sleep", "1000"))
        await eventually(lambda: a.coordinator.started(run_id))
        pid = a.coordinator.started(run_id)[0].pid

        process.send_signal(signal.SIGINT)
        await eventually(lambda: a.coordinator.of_kind("heartbeat")[-1].draining)
        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(process.communicate(), 5)  # not the 10 s grace
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 0, stderr.decode()
    assert not is_alive(pid)
    [finished] = a.coordinator.finished(run_id)
    assert (finished.outcome, finished.message) == (pb.ATTEMPT_OUTCOME_CANCELLED, "agent stopped")


# --- preconditions -------------------------------------------------------------------


async def test_preconditions_not_ready_start_nothing_and_free_the_slot(
    servers: Any, agents: Any, run_id: str, tmp_path: Path
) -> None:
    a = await servers()
    agents(a.target, capacity=1)
    await eventually(lambda: a.coordinator.of_kind("heartbeat"))
    ready_file = tmp_path / "x" / "_READY"
    check = file_exists(ready_file)

    a.coordinator.send(**offer(run_id, "true", preconditions=[check]))
    await eventually(lambda: a.coordinator.checked(run_id))

    [checked] = a.coordinator.checked(run_id)
    assert (checked.lease, checked.ready) == (ref(run_id), False)
    [verdict] = checked.verdicts
    assert (verdict.index, verdict.ready) == (0, False)
    assert verdict.message == f"no such file: {ready_file}"
    assert verdict.HasField("checked_at")
    a.coordinator.send(**offer(f"{run_id}-next", "true"))  # the slot is free again
    await eventually(lambda: a.coordinator.finished(f"{run_id}-next"))
    assert a.coordinator.started(run_id) == []
    assert a.coordinator.of_kind("lease_rejected") == []
    await eventually(lambda: ref(run_id) not in a.coordinator.of_kind("heartbeat")[-1].leases)


async def test_preconditions_ready_start_the_attempt_at_once(
    servers: Any, agents: Any, run_id: str, tmp_path: Path
) -> None:
    a = await servers()
    agents(a.target, capacity=1)
    await eventually(lambda: a.coordinator.of_kind("heartbeat"))
    ready_file = tmp_path / "_READY"
    checks = [file_exists(ready_file), command_succeeds("true")]
    a.coordinator.send(**offer(run_id, "true", token=1, preconditions=checks))
    await eventually(lambda: a.coordinator.checked(run_id))

    ready_file.touch()
    a.coordinator.send(**offer(run_id, "echo", "ran", token=2, preconditions=checks))
    await eventually(lambda: a.coordinator.finished(run_id))

    first, second = a.coordinator.checked(run_id)
    assert (first.lease, first.ready) == (ref(run_id, 1), False)
    assert [v.ready for v in first.verdicts] == [False, True]
    assert (second.lease, second.ready) == (ref(run_id, 2), True)
    assert [(v.index, v.ready) for v in second.verdicts] == [(0, True), (1, True)]
    assert [v.message for v in second.verdicts] == ["modified 0s ago", "exit code 0"]
    [started] = a.coordinator.started(run_id)
    assert started.lease == ref(run_id, 2)
    assert a.coordinator.finished(run_id)[0].outcome == pb.ATTEMPT_OUTCOME_SUCCEEDED
    assert a.coordinator.bodies(run_id) == [
        "preconditions_checked",
        "preconditions_checked",
        "attempt_started",
        "output",
        "attempt_finished",
    ]


async def test_heartbeats_and_other_leases_go_on_while_a_slow_check_runs(
    servers: Any, agents: Any, run_id: str, tmp_path: Path
) -> None:
    a = await servers()
    agents(a.target, capacity=2)
    await eventually(lambda: a.coordinator.of_kind("heartbeat"))
    go, pid_file = tmp_path / "go", tmp_path / "check.pid"
    a.coordinator.send(**offer(run_id, "true", preconditions=[waits_for(go, pid_file)]))
    await eventually(lambda: pid_in(pid_file))

    seen = len(a.coordinator.of_kind("heartbeat"))
    await eventually(lambda: len(a.coordinator.heartbeats_since(seen)) >= 3)
    assert all(ref(run_id) in h.leases for h in a.coordinator.heartbeats_since(seen))
    a.coordinator.send(**offer(f"{run_id}-other", "sleep", "1000"))
    await eventually(lambda: a.coordinator.started(f"{run_id}-other"))
    a.coordinator.send(**offer(f"{run_id}-third", "true"))  # the checking lease has a slot
    await eventually(lambda: a.coordinator.rejected(f"{run_id}-third"))
    assert a.coordinator.checked(run_id) == []

    go.touch()
    await eventually(lambda: a.coordinator.finished(run_id))
    assert a.coordinator.checked(run_id)[0].ready
    assert a.coordinator.rejected(f"{run_id}-third")[0].reason == "no free slot (capacity 2)"


async def test_an_offer_repeated_while_checking_checks_once(
    servers: Any, agents: Any, run_id: str, tmp_path: Path
) -> None:
    a = await servers()
    agents(a.target)
    await eventually(lambda: a.coordinator.of_kind("heartbeat"))
    go, pid_file = tmp_path / "go", tmp_path / "check.pid"
    a.coordinator.send(**offer(run_id, "true", preconditions=[waits_for(go, pid_file)]))
    await eventually(lambda: pid_in(pid_file))

    a.coordinator.send(**offer(run_id, "true", preconditions=[waits_for(go, pid_file)]))
    go.touch()
    await eventually(lambda: a.coordinator.finished(run_id))

    assert len(a.coordinator.checked(run_id)) == 1
    assert len(a.coordinator.started(run_id)) == 1
    assert a.coordinator.of_kind("lease_rejected") == []


@pytest.mark.parametrize("how", ["revoked", "cancelled"])
async def test_a_lease_revoked_or_cancelled_while_checking_stops_its_checks(
    servers: Any, agents: Any, run_id: str, tmp_path: Path, how: str
) -> None:
    a = await servers()
    agents(a.target)
    await eventually(lambda: a.coordinator.of_kind("heartbeat"))
    go, pid_file = tmp_path / "go", tmp_path / "check.pid"
    a.coordinator.send(**offer(run_id, "true", preconditions=[waits_for(go, pid_file)]))
    await eventually(lambda: pid_in(pid_file))
    pid = pid_in(pid_file)
    assert pid is not None

    if how == "revoked":
        a.coordinator.revoke_on_heartbeat = [ref(run_id)]
    else:
        a.coordinator.send(cancel=pb.CancelAttempt(lease=ref(run_id), reason="by alice"))
    await eventually(lambda: not is_alive(pid))
    # A heartbeat may have been on its way while the lease went.
    await eventually(lambda: ref(run_id) not in a.coordinator.of_kind("heartbeat")[-1].leases)
    seen = len(a.coordinator.of_kind("heartbeat"))
    await eventually(lambda: len(a.coordinator.heartbeats_since(seen)) >= 2)
    go.touch()  # too late: nothing may start

    assert all(ref(run_id) not in h.leases for h in a.coordinator.heartbeats_since(seen))
    a.coordinator.send(**offer(f"{run_id}-after", "true"))
    await eventually(lambda: a.coordinator.finished(f"{run_id}-after"))
    assert a.coordinator.bodies(run_id) == []


async def test_draining_gives_back_leases_being_checked(
    servers: Any, agents: Any, run_id: str, tmp_path: Path
) -> None:
    a = await servers()
    agent = agents(a.target)
    await eventually(lambda: a.coordinator.of_kind("heartbeat"))
    go, pid_file = tmp_path / "go", tmp_path / "check.pid"
    a.coordinator.send(**offer(run_id, "true", preconditions=[waits_for(go, pid_file)]))
    await eventually(lambda: pid_in(pid_file))
    pid = pid_in(pid_file)
    assert pid is not None

    a.coordinator.send(drain=pb.Drain(reason="maintenance"))
    exit_code = await asyncio.wait_for(agent.task, 10)

    assert exit_code == 0
    assert not is_alive(pid)
    assert a.coordinator.bodies(run_id) == ["lease_rejected"]
    assert a.coordinator.rejected(run_id)[0].reason == "the agent is draining"


async def test_a_lease_that_cannot_be_renewed_stops_its_checks(
    servers: Any, agents: Any, run_id: str, tmp_path: Path
) -> None:
    a = await servers()
    agents(a.target)
    await eventually(lambda: a.coordinator.of_kind("heartbeat"))
    go, pid_file = tmp_path / "go", tmp_path / "check.pid"
    a.coordinator.send(**offer(run_id, "true", preconditions=[waits_for(go, pid_file)]))
    await eventually(lambda: pid_in(pid_file))
    pid = pid_in(pid_file)
    assert pid is not None

    a.coordinator.ack_heartbeats = False
    await eventually(lambda: not is_alive(pid), within=LEASE_TTL + 2)
    go.touch()  # too late: nothing may start
    a.coordinator.ack_heartbeats = True
    await eventually(lambda: ref(run_id) not in a.coordinator.of_kind("heartbeat")[-1].leases)

    assert a.coordinator.bodies(run_id) == []


async def test_checks_go_on_across_a_reconnection(
    servers: Any, agents: Any, run_id: str, tmp_path: Path
) -> None:
    a = await servers("coordinator-a")
    a.coordinator.lease_ttl = 30  # no fencing in this test
    b_port = free_port()
    agents(a.target, f"127.0.0.1:{b_port}")
    await eventually(lambda: a.coordinator.of_kind("heartbeat"))
    go, pid_file = tmp_path / "go", tmp_path / "check.pid"
    a.coordinator.send(**offer(run_id, "true", preconditions=[waits_for(go, pid_file)]))
    await eventually(lambda: pid_in(pid_file))

    await a.server.stop(None)
    b = await servers("coordinator-b", port=b_port)
    await eventually(lambda: b.coordinator.of_kind("heartbeat"))
    go.touch()
    await eventually(lambda: b.coordinator.finished(run_id))

    [hello] = b.coordinator.of_kind("hello")
    assert list(hello.held_leases) == [ref(run_id)]
    assert b.coordinator.bodies(run_id) == [
        "preconditions_checked",
        "attempt_started",
        "attempt_finished",
    ]
    assert a.coordinator.bodies(run_id) == []
