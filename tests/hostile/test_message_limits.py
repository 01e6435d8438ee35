"""One message-size policy: coordinator, agent and clients send and receive at most
``hydra.limits.MAX_MESSAGE_BYTES``.

Before it, the coordinator sent up to 32 MiB while the agent received 4 MiB: a run
whose rendered argv was 5 MB broke the agent's stream with RESOURCE_EXHAUSTED
every 2 s, forever, and the run stayed LEASED. And the coordinator read (and
parsed) 32 MiB requests before refusing a caller without its token: 8 such
calls grew its memory by 400 MB.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.wait import wait_for
from hydra.client import Client, Role, RunState, Task
from hydra.coordinator.agents import protocol
from hydra.limits import MAX_MESSAGE_BYTES
from hydra.spec import MAX_STRING_BYTES
from hydra.v1 import task_service_pb2 as task_pb
from hydra.v1 import task_service_pb2_grpc as task_grpc
from hydra.v1 import types_pb2 as pb

from support.cluster import AgentProcess, CoordinatorThread, Database
from support.credentials import make_credential
from support.processes import processes_in

#: A run that must still work while (and after) the hostile one is handled.
HEALTHY = Task(name="healthy", command=("echo", "still serving"))
#: Unauthenticated requests sent at once, and the size of each.
BIG_CALLS = 8
BIG_CALL_BYTES = 30 * 1000 * 1000
#: How much a coordinator's memory may grow while refusing them all.
RSS_GROWTH_BOUND_MB = 64


@pytest.fixture
def coordinator(db_conninfo: str) -> Iterator[CoordinatorThread]:
    started = CoordinatorThread(db_conninfo, name="limits").start()
    yield started
    started.stop()


@pytest.fixture
def agent(
    coordinator: CoordinatorThread, db_conninfo: str, tmp_path: Path
) -> Iterator[AgentProcess]:
    process = AgentProcess("limits-agent", [coordinator.address], log_path=tmp_path / "agent.log")
    process.start()
    db = Database(db_conninfo)
    wait_for(
        lambda: (
            db.value("SELECT state FROM hydra_agents WHERE id = %s", "limits-agent") == "connected"
        ),
        timeout=20,
        message="the agent to connect",
    )
    yield process
    process.stop()


def _connections(agent: AgentProcess) -> int:
    """How many times the agent was welcomed (1: its stream never broke)."""
    return agent.log().count("connected to ")


def _run_to_end(client: Client, task: str, timeout: float = 15) -> Any:
    run, _ = client.trigger(task)
    return client.wait(run.id, timeout=timeout)


def _still_serving(client: Client) -> None:
    client.apply(HEALTHY)
    assert _run_to_end(client, HEALTHY.name).state is RunState.SUCCEEDED


def test_a_5_mb_rendered_argv_fails_its_attempt_once_and_the_agent_stream_holds(
    coordinator: CoordinatorThread, agent: AgentProcess, db_conninfo: str
) -> None:
    # Each piece is within the spec's limits; rendered, the argument would be 5 MB. The
    # rendering limits refuse it first now; whatever refuses it, the attempt fails once,
    # naming a bound, and the agent's stream holds (the transport: the next test).
    big = "x" * (MAX_STRING_BYTES - 1024)
    loops = 5 * 1024 * 1024 // len(big) + 1
    task = Task(
        name="huge-argv",
        command=("echo", f"{{% for i in range({loops}) %}}{{{{ params.big }}}}{{% endfor %}}"),
        params={"big": big},
    )
    with Client(coordinator.address) as client:
        client.apply(task)
        ended = _run_to_end(client, task.name)
        assert ended.state is RunState.FAILED, ended
        attempts = Database(db_conninfo).attempts(ended.id)
        assert len(attempts) == 1, attempts
        assert re.search(r"limit|at most", attempts[0]["message"]), attempts[0]["message"]
        _still_serving(client)
    assert _connections(agent) == 1, agent.log_tail()


@pytest.fixture
def padded_offers(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Offers of the named tasks padded with argv elements up to about that many bytes:
    the transport's limit, tested apart from any limit on rendering."""
    sizes: dict[str, int] = {}
    real_offer = protocol.offer

    def offer(*args: Any, **kwargs: Any) -> Any:
        message = real_offer(*args, **kwargs)
        size = sizes.get(message.lease.task)
        if size is not None:
            piece = "p" * 100_000
            message.lease.argv.extend([piece] * (size // len(piece)))
        return message

    monkeypatch.setattr(protocol, "offer", offer)
    return sizes


def test_the_coordinator_sends_what_the_agent_can_receive_and_fails_what_it_cannot(
    padded_offers: dict[str, int],
    coordinator: CoordinatorThread,
    agent: AgentProcess,
    db_conninfo: str,
) -> None:
    db = Database(db_conninfo)
    padded_offers["just-fits"] = MAX_MESSAGE_BYTES - 64 * 1024
    padded_offers["too-big"] = MAX_MESSAGE_BYTES + 1024 * 1024
    with Client(coordinator.address) as client:
        client.apply(Task(name="just-fits", command=("true",)))
        client.apply(Task(name="too-big", command=("true",)))
        # It reaches the agent, which cannot exec an argv this long and says so.
        fits = _run_to_end(client, "just-fits")
        [reached] = db.attempts(fits.id)
        assert "argument list too long" in reached["message"].lower(), reached
        # It never leaves the coordinator: its one attempt fails, naming the limit.
        too_big = _run_to_end(client, "too-big")
        assert too_big.state is RunState.FAILED
        [refused] = db.attempts(too_big.id)
        assert "4 MiB message limit" in refused["message"], refused
        _still_serving(client)
    assert _connections(agent) == 1, agent.log_tail()


def _rss_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def test_big_unauthenticated_calls_are_refused_unread(db_conninfo: str, tmp_path: Path) -> None:
    admin = make_credential(db_conninfo, "admin", Role.ADMIN)
    with processes_in(tmp_path) as processes:
        started = processes.coordinator(db_conninfo, insecure=False)
        pid = started.process.pid
        request = task_pb.ApplyTaskRequest(
            spec=pb.TaskSpec(name="big", command=["true"], description="x" * BIG_CALL_BYTES)
        )
        codes: list[grpc.StatusCode] = []
        options = [("grpc.max_send_message_length", -1)]
        with grpc.insecure_channel(started.address, options=options) as channel:
            stub = task_grpc.TaskServiceStub(channel)
            # Warm up first (the first calls of a fresh server allocate for themselves),
            # so that what is measured is what the big calls cost.
            small = task_pb.ApplyTaskRequest(spec=pb.TaskSpec(name="small", command=["true"]))
            for _ in range(3):
                with contextlib.suppress(grpc.RpcError):
                    stub.Apply(small, timeout=10)
            before = _rss_mb(pid)

            def call() -> None:
                try:
                    stub.Apply(request, timeout=30)
                except grpc.RpcError as error:
                    codes.append(error.code())

            callers = [threading.Thread(target=call) for _ in range(BIG_CALLS)]
            for caller in callers:
                caller.start()
            for caller in callers:
                caller.join(timeout=60)
            # Refused for the missing token, whatever the size.
            assert codes == [grpc.StatusCode.UNAUTHENTICATED] * BIG_CALLS
            grown = _rss_mb(pid) - before
            assert grown < RSS_GROWTH_BOUND_MB, f"RSS grew by {grown} MB"
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        with Client(started.address, token=admin) as client:
            client.apply(Task(name="small", command=("true",)))
            assert client.get_task("small").task.version == 1
