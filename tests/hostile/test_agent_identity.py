"""An agent id belongs to one agent process at a time.

Before: a second Hello with a live agent's id made the coordinator reconcile the
real agent's leases away (they were not in the newcomer's Hello) and close its
stream; a healthy run went LOST and its command started again. Now a Hello for
an id whose live session belongs to another process (another ``instance_id``) is
refused with ALREADY_EXISTS and changes nothing; a restarted agent, whose old
session is dead, is still welcomed. Agent ids are validated.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from harness.hydra import HYDRA
from harness.processes import clean_env
from harness.wait import wait_for
from hydra.client import Client, Retry, RunState, Task

from support.agent_double import ScriptedAgent
from support.cluster import AgentProcess, CoordinatorThread, Database

REFUSED = "is already connected to coordinator"


@pytest.fixture
def coordinator(db_conninfo: str) -> Iterator[CoordinatorThread]:
    started = CoordinatorThread(db_conninfo, name="identity-c0").start()
    yield started
    started.stop()


def _agent_row(db: Database, agent_id: str) -> dict[str, Any] | None:
    rows = db.rows("SELECT * FROM hydra_agents WHERE id = %s", agent_id)
    return rows[0] if rows else None


def _start_agent(
    coordinators: list[CoordinatorThread], agent_id: str, log_path: Path, db: Database
) -> AgentProcess:
    agent = AgentProcess(agent_id, [c.address for c in coordinators], log_path=log_path)
    agent.start()
    wait_for(
        lambda: (row := _agent_row(db, agent_id)) is not None and row["state"] == "connected",
        timeout=20,
        message=f"agent {agent_id} to connect",
    )
    return agent


def _welcomes(agent: AgentProcess) -> int:
    """How many times the agent was welcomed (1: its stream never broke)."""
    return agent.log().count("connected to ")


def _marked_task(name: str, marker: Path, seconds: float, **fields: Any) -> Task:
    """A task whose every start appends a line to `marker`, then runs for `seconds`."""
    script = f"echo started >> {marker}; sleep {seconds}"
    return Task(name=name, command=("sh", "-c", script), **fields)


def test_a_second_agent_process_with_a_running_agents_id_is_refused_and_the_first_finishes(
    coordinator: CoordinatorThread, db_conninfo: str, tmp_path: Path
) -> None:
    db = Database(db_conninfo)
    first = _start_agent([coordinator], "twin", tmp_path / "first.log", db)
    marker = tmp_path / "starts"
    second = AgentProcess("twin", [coordinator.address], log_path=tmp_path / "second.log")
    try:
        with Client(coordinator.address) as client:
            client.apply(_marked_task("long", marker, 4))
            run, _ = client.trigger("long")
            db.wait_run_state(run.id, {"RUNNING"})
            second.start()
            # Refused with a clear line, again and again, and it keeps trying (no exit).
            wait_for(
                lambda: second.log().count(REFUSED) >= 2,
                timeout=15,
                message="the second agent to be refused twice",
            )
            assert "is another agent running with this id?" in second.log()
            assert "ERROR" in next(line for line in second.log().splitlines() if REFUSED in line)
            assert "Traceback" not in second.log()
            assert second.running, second.log_tail()
            ended = client.wait(run.id, timeout=20)
            assert ended.state is RunState.SUCCEEDED, ended
            assert [a["state"] for a in db.attempts(run.id)] == ["SUCCEEDED"]
            assert marker.read_text().count("started") == 1
            assert _welcomes(first) == 1, first.log_tail()
            # The cluster kept serving: the first agent runs the next one too.
            client.apply(Task(name="next", command=("true",)))
            assert client.wait(client.trigger("next")[0].id, timeout=20).state is (
                RunState.SUCCEEDED
            )
        assert _agent_row(db, "twin")["state"] == "connected"  # type: ignore[index]
    finally:
        second.stop()
        first.stop()


def test_a_scripted_hello_with_a_live_id_is_refused_naming_the_id_and_the_coordinator(
    coordinator: CoordinatorThread, db_conninfo: str, tmp_path: Path
) -> None:
    db = Database(db_conninfo)
    other = CoordinatorThread(db_conninfo, name="identity-c1").start()
    agent = _start_agent([coordinator], "live", tmp_path / "agent.log", db)
    try:
        before = _agent_row(db, "live")
        # On the coordinator that holds the stream, and on another one.
        for target in (coordinator, other):
            with ScriptedAgent(target.address, "live", instance_id="impostor") as impostor:
                impostor.send(hello={"agent_id": "live", "capacity": 1, "instance_id": "x"})
                refusal: Any = impostor.refusal()
            assert refusal.code() is grpc.StatusCode.ALREADY_EXISTS, refusal
            assert "'live'" in refusal.details(), refusal.details()
            assert "'identity-c0'" in refusal.details(), refusal.details()
        after = _agent_row(db, "live")
        assert after is not None and before is not None
        assert after["instance_id"] == before["instance_id"] != "x"
        assert (after["coordinator_id"], after["state"]) == ("identity-c0", "connected")
        assert after["connected_at"] == before["connected_at"]
        with Client(coordinator.address) as client:
            client.apply(Task(name="after-impostor", command=("true",)))
            run, _ = client.trigger("after-impostor")
            assert client.wait(run.id, timeout=20).state is RunState.SUCCEEDED
        assert _welcomes(agent) == 1, agent.log_tail()
    finally:
        agent.stop()
        other.stop()


def test_an_agent_killed_and_restarted_with_its_id_is_welcomed_and_its_lease_is_retried(
    coordinator: CoordinatorThread, db_conninfo: str, tmp_path: Path
) -> None:
    db = Database(db_conninfo)
    agent = _start_agent([coordinator], "phoenix", tmp_path / "agent.log", db)
    try:
        with Client(coordinator.address) as client:
            task = _marked_task("orphaned", tmp_path / "starts", 1, retry=Retry(max_attempts=2))
            client.apply(task)
            run, _ = client.trigger("orphaned")
            db.wait_run_state(run.id, {"RUNNING"})
            agent.kill()
            agent.start()  # the same id, a new process
            ended = client.wait(run.id, timeout=20)
            assert ended.state is RunState.SUCCEEDED, ended
        # Its Hello held no lease: the old attempt was lost, the retry ran on it.
        attempts = db.attempts(run.id)
        assert [(a["state"], a["agent_id"]) for a in attempts] == [
            ("LOST", "phoenix"),
            ("SUCCEEDED", "phoenix"),
        ]
        # A Hello that comes before the coordinator has noticed the old stream's end may
        # be refused once or twice (by design: it cannot tell that stream is dead yet);
        # the restarted agent got in and ran the retry all the same, as asserted above.
    finally:
        agent.stop()


BAD_IDS = {
    "a colon": "host:7070",
    "a space": "my agent",
    "129 characters": "a" * 129,
    "a slash": "pool/1",
}


def test_bad_agent_ids_are_refused_naming_the_field(
    coordinator: CoordinatorThread, db_conninfo: str
) -> None:
    db = Database(db_conninfo)
    for bad in BAD_IDS.values():
        with ScriptedAgent(coordinator.address, bad) as agent:
            agent.send(hello={"agent_id": bad, "capacity": 1})
            refusal: Any = agent.refusal()
        assert refusal.code() is grpc.StatusCode.INVALID_ARGUMENT, (bad, refusal)
        assert refusal.details().startswith("hello.agent_id: "), refusal.details()
    assert db.value("SELECT count(*) FROM hydra_agents") == 0
    # `hydra agent` says so before connecting, without a traceback.
    done = subprocess.run(
        [*HYDRA, "agent", "--coordinator", coordinator.address, "--id", "host:7070"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("hydra: error: --id: 'host:7070' is not an agent id"), done.stderr
    assert "Traceback" not in done.stderr
    # A valid id is still welcomed: the coordinator kept serving.
    with ScriptedAgent(coordinator.address, "good.agent-1_a") as agent:
        agent.hello()
        agent.heartbeat([])
