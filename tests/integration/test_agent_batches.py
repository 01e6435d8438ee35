"""Agent protocol 2: batches both ways on the agent stream, and its versions.

A stream speaks the lower of the two sides' newest versions (the proto's
``Hello.protocol_version``); batches are sent only on a stream that speaks 2,
so an agent and a coordinator of different versions interoperate, and one
that cannot speak the other's version is refused with both versions named.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry

from harness.hydra import wait_agents
from harness.wait import wait_for
from hydra import stream_batches
from hydra.client import Client, Concurrency, Task
from hydra.v1 import agent_service_pb2 as pb

from support.agent_double import ScriptedAgent
from support.cluster import AgentProcess, CoordinatorThread, Database

#: Runs waiting before the scripted agent says Hello: leased to it in one go.
WAITING = 4


def _stream_figures(registry: CollectorRegistry) -> dict[str, float]:
    """Messages and items received and sent on agent streams so far."""
    figures = {}
    for metric in ("messages", "items"):
        for direction in ("received", "sent"):
            value = registry.get_sample_value(
                f"hydra_agent_stream_{metric}_total", {"direction": direction}
            )
            figures[f"{metric} {direction}"] = value or 0.0
    return figures


def _queue_runs(client: Client, task: str, count: int) -> None:
    client.apply(Task(name=task, command=("true",), concurrency=Concurrency(max_active_runs=100)))
    for _ in range(count):
        client.trigger(task)


def _offers(received: list[pb.CoordinatorMessage]) -> list[list[pb.LeaseOffer]]:
    """The offers of each stream message received, by message."""
    offers = []
    for message in received:
        items = message.batch.messages if message.HasField("batch") else [message]
        if leases := [item.lease for item in items if item.HasField("lease")]:
            offers.append(leases)
    return offers


def _finished(lease: pb.LeaseRef, argv: list[str]) -> pb.AgentMessage:
    now = time.time()
    finished = pb.AttemptFinished(
        lease=lease, outcome=pb.ATTEMPT_OUTCOME_SUCCEEDED, exit_code=0, argv=argv
    )
    finished.started_at.FromSeconds(int(now))
    finished.finished_at.FromSeconds(int(now))
    return pb.AgentMessage(attempt_finished=finished)


def _started(lease: pb.LeaseRef, argv: list[str]) -> pb.AgentMessage:
    started = pb.AttemptStarted(lease=lease, argv=argv, pid=1)
    started.started_at.FromSeconds(int(time.time()))
    return pb.AgentMessage(attempt_started=started)


def test_a_busy_agent_and_its_coordinator_batch_both_ways(db_conninfo: str, tmp_path: Path) -> None:
    """Forty runs on 8 slots: fewer stream messages than items each way, every run once."""
    db = Database(db_conninfo)
    coordinator = CoordinatorThread(db_conninfo).start()
    agent = AgentProcess("busy", [coordinator.address], capacity=8, log_path=tmp_path / "a.log")
    try:
        agent.start()
        wait_agents(db_conninfo, ["busy"], watched=[agent], timeout=20)
        with Client(coordinator.address) as client:
            _queue_runs(client, "many", 40)
        wait_for(
            lambda: [r["state"] for r in db.runs("many")] == ["SUCCEEDED"] * 40,
            timeout=60,
            message="40 runs succeeded",
        )
        figures = _stream_figures(coordinator.coordinator.metrics.registry)
        assert figures["items received"] > figures["messages received"], figures
        assert figures["items sent"] > figures["messages sent"], figures
        attempts = db.rows(
            "SELECT a.run_id, count(*) AS n FROM hydra_attempts a JOIN hydra_runs r "
            "ON r.id = a.run_id GROUP BY a.run_id"
        )
        assert len(attempts) == 40 and {row["n"] for row in attempts} == {1}
    finally:
        agent.stop()
        coordinator.stop()


def test_an_agent_older_than_batches_gets_one_item_per_message(db_conninfo: str) -> None:
    """A Hello without protocol_version (protocol 1): the Welcome says 1, and offers
    leased together still come one per message."""
    coordinator = CoordinatorThread(db_conninfo).start()
    try:
        with (
            Client(coordinator.address) as client,
            ScriptedAgent(coordinator.address, "old", capacity=WAITING) as agent,
        ):
            _queue_runs(client, "waiting", WAITING)
            welcome = agent.hello()
            assert welcome.protocol_version == stream_batches.SINGLE
            leases = [agent.expect("lease").lease for _ in range(WAITING)]
            assert not [m for m in agent.received if m.HasField("batch")]
            assert [len(offers) for offers in _offers(agent.received)] == [1] * WAITING
            for lease in leases:  # and it is answered item by item
                assert agent.finished(lease, pb.ATTEMPT_OUTCOME_SUCCEEDED, ["true"]).accepted
    finally:
        coordinator.stop()


def test_an_agent_of_protocol_2_gets_the_offers_leased_together_in_one_batch(
    db_conninfo: str,
) -> None:
    coordinator = CoordinatorThread(db_conninfo).start()
    try:
        with (
            Client(coordinator.address) as client,
            ScriptedAgent(coordinator.address, "new", capacity=WAITING) as agent,
        ):
            _queue_runs(client, "waiting", WAITING)
            welcome = agent.hello(protocol_version=2, min_protocol_version=1)
            assert welcome.protocol_version == stream_batches.BATCHES
            leases = [agent.expect("lease").lease for _ in range(WAITING)]
            assert [len(offers) for offers in _offers(agent.received)] == [WAITING]
            # Every end in one batch; each is acknowledged on its own.
            agent.send_batch(*(_finished(lease, ["true"]) for lease in leases))
            acks = [agent.expect("report_ack") for _ in leases]
            assert sorted(a.lease.run_id for a in acks) == sorted(le.run_id for le in leases)
            assert all(ack.accepted for ack in acks)
    finally:
        coordinator.stop()


def test_a_start_and_its_end_in_one_batch_record_one_attempt(db_conninfo: str) -> None:
    """An attempt that ended before its start was sent: both go in one batch."""
    db = Database(db_conninfo)
    coordinator = CoordinatorThread(db_conninfo).start()
    try:
        with (
            Client(coordinator.address) as client,
            ScriptedAgent(coordinator.address, "quick") as agent,
        ):
            client.apply(Task(name="quick", command=("true",)))
            agent.hello(protocol_version=2)
            run, _ = client.trigger("quick")
            offer = agent.expect("lease")
            agent.send_batch(_started(offer.lease, ["true"]), _finished(offer.lease, ["true"]))
            assert agent.expect("report_ack").accepted
            assert db.wait_run_state(run.id, {"SUCCEEDED"})["attempts_used"] == 1
            [attempt] = db.attempts(run.id)
            assert (attempt["state"], attempt["agent_id"]) == ("SUCCEEDED", "quick")
            assert attempt["started_at"] is not None
    finally:
        coordinator.stop()


def test_a_partly_acknowledged_batch_is_settled_report_by_report(db_conninfo: str) -> None:
    """One batch: an end under a stale token, and a current one. Each gets its own
    verdict; sending the accepted one again (after a lost ack) is refused, not recorded twice."""
    db = Database(db_conninfo)
    coordinator = CoordinatorThread(db_conninfo).start()
    try:
        with (
            Client(coordinator.address) as client,
            ScriptedAgent(coordinator.address, "partial") as agent,
        ):
            client.apply(Task(name="partial", command=("true",)))
            agent.hello(protocol_version=2)
            run, _ = client.trigger("partial")
            offer = agent.expect("lease")
            stale = pb.LeaseRef(run_id=offer.lease.run_id, lease_token=offer.lease.lease_token + 7)
            agent.send_batch(_finished(stale, ["true"]), _finished(offer.lease, ["true"]))
            acks = {}
            for _ in range(2):
                ack = agent.expect("report_ack")
                acks[ack.lease.lease_token] = ack
            assert not acks[stale.lease_token].accepted
            assert "stale lease" in acks[stale.lease_token].reason
            assert acks[offer.lease.lease_token].accepted
            again = agent.finished(offer.lease, pb.ATTEMPT_OUTCOME_SUCCEEDED, ["true"])
            assert not again.accepted and "already SUCCEEDED" in again.reason
            assert len(db.attempts(run.id)) == 1
    finally:
        coordinator.stop()


def test_an_agent_needing_a_newer_protocol_is_refused_naming_both_versions(
    db_conninfo: str,
) -> None:
    db = Database(db_conninfo)
    coordinator = CoordinatorThread(db_conninfo).start()
    try:
        before = db.counts()
        with ScriptedAgent(coordinator.address, "future") as agent:
            agent.say_hello(protocol_version=5, min_protocol_version=3)
            refusal = agent.refusal()
        assert refusal.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert refusal.details() == (
            "hello.min_protocol_version: the agent speaks agent protocol 3 to 5, "
            "the coordinator 1 to 2: upgrade the coordinator"
        )
        assert db.counts() == before  # not even recorded as connected
    finally:
        coordinator.stop()


def test_a_batch_holding_a_hello_ends_the_stream_naming_the_item(db_conninfo: str) -> None:
    coordinator = CoordinatorThread(db_conninfo).start()
    try:
        with ScriptedAgent(coordinator.address, "nested") as agent:
            agent.hello(protocol_version=2)
            agent.send_batch(
                pb.AgentMessage(heartbeat=pb.Heartbeat(sequence=1)),
                pb.AgentMessage(hello=pb.Hello(agent_id="nested", capacity=1)),
            )
            refusal = agent.refusal()
        assert refusal.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert refusal.details() == "batch.messages[1]: a batch cannot hold a hello"
        with Client(coordinator.address) as client:  # and it serves on
            client.apply(Task(name="still", command=("true",)))
    finally:
        coordinator.stop()


def test_a_new_agent_and_a_coordinator_older_than_batches_interoperate(
    db_conninfo: str, tmp_path: Path
) -> None:
    """A coordinator speaking protocol 1 (as one older than batches does): the real
    agent sends one item per message, and every run succeeds once."""
    db = Database(db_conninfo)
    coordinator = CoordinatorThread(db_conninfo, agent_protocol_version=1).start()
    agent = AgentProcess("newer", [coordinator.address], capacity=8, log_path=tmp_path / "a.log")
    try:
        agent.start()
        wait_agents(db_conninfo, ["newer"], watched=[agent], timeout=20)
        with Client(coordinator.address) as client:
            _queue_runs(client, "mixed", 24)
        wait_for(
            lambda: [r["state"] for r in db.runs("mixed")] == ["SUCCEEDED"] * 24,
            timeout=60,
            message="24 runs succeeded",
        )
        figures = _stream_figures(coordinator.coordinator.metrics.registry)
        assert figures["items received"] == figures["messages received"] > 24 * 2, figures
        assert figures["items sent"] == figures["messages sent"] > 24, figures
    finally:
        agent.stop()
        coordinator.stop()
