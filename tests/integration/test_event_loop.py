"""The daemons' event loop (hydra.event_loop): uvloop by default, asyncio's on request,
and a clear refusal of anything else before anything starts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.hydra import HYDRA, coordinator_argv, start_agent, wait_agents, wait_serving
from harness.net import free_port
from harness.processes import clean_env
from harness.wait import wait_for
from hydra import config, event_loop
from hydra.client import Client, Task
from hydra.errors import InvalidArgument

from support.cluster import Database
from support.processes import processes_in


@pytest.mark.parametrize(
    ("value", "chosen"), [("", ""), ("UVLOOP", "uvloop"), ("asyncio", "asyncio")]
)
def test_the_setting_is_read_case_blind(value: str, chosen: str) -> None:
    assert config.event_loop({"HYDRA_EVENT_LOOP": value}) == chosen


def test_another_value_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_EVENT_LOOP", "tokio")
    with pytest.raises(InvalidArgument) as refused:
        event_loop.loop_factory()
    assert str(refused.value) == "HYDRA_EVENT_LOOP: must be uvloop or asyncio, not 'tokio'"


def test_an_agent_with_a_bad_event_loop_exits_at_once_saying_why() -> None:
    done = subprocess.run(
        [*HYDRA, "agent", "--coordinator", "127.0.0.1:1", "--id", "x"],
        env={**clean_env(), "HYDRA_EVENT_LOOP": "tokio"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "HYDRA_EVENT_LOOP: must be uvloop or asyncio, not 'tokio'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_coordinator_and_an_agent_run_work_on_either_loop(
    db_conninfo: str, tmp_path: Path, loop: str
) -> None:
    """The default is uvloop; HYDRA_EVENT_LOOP=asyncio is the way back. Either way a
    run is leased, run and recorded, and each process says its loop in its log."""
    env = {} if loop == "uvloop" else {"HYDRA_EVENT_LOOP": "asyncio"}
    db = Database(db_conninfo)
    with processes_in(tmp_path) as processes:
        processes.env.update(env)
        address = f"127.0.0.1:{free_port()}"
        coordinator = processes.start("coordinator", coordinator_argv(db_conninfo, address))
        wait_serving(coordinator, address)
        agent = start_agent(processes, [address], "looped", capacity=2)
        wait_agents(db_conninfo, ["looped"], watched=[agent], timeout=20)
        with Client(address) as client:
            client.apply(Task(name="looped", command=("true",)))
            run, _ = client.trigger("looped")
        db.wait_run_state(run.id, {"SUCCEEDED"})
        for process in (coordinator, agent):
            wait_for(
                lambda process=process: f"event loop: {loop}" in process.log(),
                timeout=10,
                message=f"{process.name} to say it runs on {loop}",
            )
