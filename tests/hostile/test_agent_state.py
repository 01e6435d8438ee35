"""An agent that left stays "disconnected": a heartbeat recorded after the
disconnect must not make it look connected again (issue: touch_agents set a
disconnected agent back to connected when its last heartbeat was written after
the stream had ended)."""

from __future__ import annotations

import time

from hydra.client import Client, Task

from support.agent_double import ScriptedAgent
from support.cluster import CoordinatorThread, Database

#: Tries of the race; each closes a stream right after a heartbeat.
TRIES = 5
#: How long the agent must stay disconnected after its stream ended.
SETTLE_S = 0.5


def _state(db: Database, agent_id: str) -> str:
    return str(db.value("SELECT state FROM hydra_agents WHERE id = %s", agent_id))


def test_a_heartbeat_sent_just_before_the_stream_ends_leaves_the_agent_disconnected(
    db_conninfo: str,
) -> None:
    db = Database(db_conninfo)
    coordinator = CoordinatorThread(db_conninfo).start()
    try:
        for attempt in range(TRIES):
            agent_id = f"leaver-{attempt}"
            with ScriptedAgent(coordinator.address, agent_id) as agent:
                agent.hello()
                agent.heartbeat([])  # the session is open
                agent.send(heartbeat={"sequence": 99})  # gathered for 50 ms, then recorded
                agent.end_stream()  # meanwhile the stream ends and the agent is disconnected
                agent.expect_end()
            # The stream has ended: the disconnect must win over that last heartbeat.
            deadline = time.monotonic() + 10
            while _state(db, agent_id) != "disconnected":
                assert time.monotonic() < deadline, f"{agent_id} never recorded disconnected"
                time.sleep(0.02)
            time.sleep(SETTLE_S)  # the heartbeat round, if any, has committed by now
            assert _state(db, agent_id) == "disconnected", f"try {attempt}: revived"
        # The cluster kept serving meanwhile.
        with Client(coordinator.address) as client:
            client.apply(Task(name="still-serving", command=("true",)))
            assert client.get_task("still-serving").task.version == 1
    finally:
        coordinator.stop()
