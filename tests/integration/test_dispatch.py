"""Inline dispatch: the transaction that makes work available leases it too.

A Trigger, and a finished attempt that frees a slot, lease the next run for
this coordinator's agents before they commit, so the run's lease and the
change that queued it carry the same transaction timestamp (PostgreSQL's
``now()``), and no agent is ever offered more runs than it has slots.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from harness.wait import wait_for
from hydra.client import Client, Concurrency, Cron, Retry, Task
from hydra.coordinator.loops.dispatcher import ASK_FIRST_FROM
from hydra.coordinator.store.records import LEASE_AHEAD
from hydra.v1 import agent_service_pb2 as pb

from support.agent_double import ScriptedAgent
from support.cluster import FAST_TIMES, CoordinatorThread, Database


def _run_row(db: Database, run_id: str) -> dict[str, Any]:
    [row] = db.rows(
        "SELECT state, lease_owner, created_at, finished_at, lease_expires_at "
        "FROM hydra_runs WHERE id = %s",
        run_id,
    )
    return row


def _connect(agent: ScriptedAgent) -> None:
    agent.hello()
    # A heartbeat's answer comes once the coordinator reads the stream: the session is open.
    agent.heartbeat([])


def _leased_to(db: Database, agent_id: str) -> int:
    return int(
        db.value(
            "SELECT count(*) FROM hydra_runs WHERE lease_owner = %s "
            "AND state IN ('LEASED', 'RUNNING')",
            agent_id,
        )
    )


#: Rounds in the tests below. The dispatcher loop, woken when a report frees a slot,
#: may reserve that slot first and lease the run a moment later in a transaction of
#: its own (on a loaded machine, in most rounds); without inline dispatch no round
#: would be inline, so one inline round is the proof.
ROUNDS = 6
#: Offers of a per-second cron that may leave after their occurrence on a loaded machine.
LATE_OFFERS_ALLOWED = 2


def test_a_triggered_run_is_leased_in_the_transaction_that_created_it(db_conninfo: str) -> None:
    db = Database(db_conninfo)
    coordinator = CoordinatorThread(db_conninfo).start()
    try:
        with (
            Client(coordinator.address) as client,
            ScriptedAgent(coordinator.address, "scripted") as agent,
        ):
            client.apply(Task(name="inline", command=("true",)))
            _connect(agent)
            inline = 0
            for _ in range(ROUNDS):
                run, _ = client.trigger("inline")
                offer = agent.expect("lease")
                assert offer.lease.run_id == run.id
                row = _run_row(db, run.id)
                assert row["state"] == "LEASED"
                # now() is the transaction's start: the same instant for both only
                # when the insert and the lease committed together.
                inline += row["lease_expires_at"] - row["created_at"] == FAST_TIMES.ttl
                agent.started(offer.lease, offer.argv)
                assert agent.finished(offer.lease, pb.ATTEMPT_OUTCOME_SUCCEEDED, offer.argv)
            assert inline >= 1
    finally:
        coordinator.stop()


def test_a_finished_attempt_leases_the_next_run_for_its_slot_in_the_same_commit(
    db_conninfo: str,
) -> None:
    db = Database(db_conninfo)
    coordinator = CoordinatorThread(db_conninfo).start()
    try:
        with (
            Client(coordinator.address) as client,
            ScriptedAgent(coordinator.address, "scripted", capacity=1) as agent,
        ):
            client.apply(
                Task(name="serial", command=("true",), concurrency=Concurrency(max_active_runs=9))
            )
            _connect(agent)
            runs = [client.trigger("serial")[0] for _ in range(ROUNDS + 1)]
            offer = agent.expect("lease")
            assert offer.lease.run_id == runs[0].id
            assert _run_row(db, runs[1].id)["state"] == "QUEUED"  # one slot only
            inline = 0
            for done_run, next_run in itertools.pairwise(runs):
                agent.started(offer.lease, offer.argv)
                ack = agent.finished(offer.lease, pb.ATTEMPT_OUTCOME_SUCCEEDED, offer.argv)
                assert ack.accepted
                offer = agent.expect("lease")
                assert offer.lease.run_id == next_run.id
                done, leased = _run_row(db, done_run.id), _run_row(db, next_run.id)
                assert done["state"] == "SUCCEEDED"
                inline += leased["lease_expires_at"] - done["finished_at"] == FAST_TIMES.ttl
            assert inline >= 1
    finally:
        coordinator.stop()


def test_an_agent_is_never_leased_more_runs_than_it_has_slots(db_conninfo: str) -> None:
    db = Database(db_conninfo)
    coordinator = CoordinatorThread(db_conninfo).start()
    try:
        with (
            Client(coordinator.address) as client,
            ScriptedAgent(coordinator.address, "scripted", capacity=2) as agent,
        ):
            client.apply(
                Task(name="many", command=("true",), concurrency=Concurrency(max_active_runs=50))
            )
            _connect(agent)
            runs = [client.trigger("many")[0] for _ in range(6)]
            offers = [agent.expect("lease"), agent.expect("lease")]
            # Each Trigger leased inline before it returned, and woke the dispatcher
            # loop as well; neither may have used a slot twice.
            assert _leased_to(db, "scripted") == 2
            for offer in offers:
                agent.started(offer.lease, offer.argv)
                assert agent.finished(offer.lease, pb.ATTEMPT_OUTCOME_SUCCEEDED, offer.argv)
            offers = [agent.expect("lease"), agent.expect("lease")]
            assert {o.lease.run_id for o in offers} <= {r.id for r in runs[2:]}
            wait_for(lambda: _leased_to(db, "scripted") == 2, timeout=10)
            agent.heartbeat([o.lease for o in offers])  # a round trip: the stream is settled
            assert _leased_to(db, "scripted") == 2
            queued = db.value("SELECT count(*) FROM hydra_runs WHERE state = 'QUEUED'")
            assert queued == 2
            # Offers sent before the heartbeat's answer arrived before it: four in all.
            assert sum(m.WhichOneof("body") == "lease" for m in agent.received) == 4
    finally:
        coordinator.stop()


def test_the_dispatcher_still_leases_work_that_becomes_due_later(db_conninfo: str) -> None:
    coordinator = CoordinatorThread(db_conninfo).start()
    try:
        with (
            Client(coordinator.address) as client,
            ScriptedAgent(coordinator.address, "scripted") as agent,
        ):
            client.apply(Task(name="later", command=("true",)))
            run, _ = client.trigger("later")  # no agent yet: nothing to lease inline
            _connect(agent)
            offer = agent.expect("lease", timeout=10)
            assert offer.lease.run_id == run.id
    finally:
        coordinator.stop()


@pytest.mark.parametrize("agents", [1, ASK_FIRST_FROM], ids=["one agent", "many agents"])
def test_a_retry_is_offered_when_its_backoff_ends_not_at_the_next_poll(
    db_conninfo: str, agents: int
) -> None:
    # The failed attempt's transaction queues the retry for later: nothing to
    # lease inline, so the dispatcher must learn when it becomes due. With many
    # agents it first asks whether anything is due at all.
    backoff = timedelta(seconds=0.5)
    coordinator = CoordinatorThread(db_conninfo).start()
    try:
        with contextlib.ExitStack() as stack:
            client = stack.enter_context(Client(coordinator.address))
            client.apply(
                Task(
                    name="flaky",
                    command=("false",),
                    retry=Retry(max_attempts=2, backoff=backoff),
                    selector={"pool": "main"},
                )
            )
            agent, *idle = (
                stack.enter_context(
                    ScriptedAgent(
                        coordinator.address,
                        f"scripted-{i}",
                        labels={"pool": "main" if i == 0 else "other"},
                    )
                )
                for i in range(agents)
            )
            for each in (*idle, agent):
                _connect(each)  # the dispatcher has just gone to sleep: up to 5 s when idle
            run, _ = client.trigger("flaky")
            first = agent.expect("lease")
            agent.started(first.lease, first.argv)
            assert agent.finished(first.lease, pb.ATTEMPT_OUTCOME_FAILED, first.argv)
            failed_at = time.monotonic()
            second = agent.expect("lease", timeout=10)
            waited = time.monotonic() - failed_at
            assert second.lease.run_id == run.id and second.attempt == 2
            assert backoff.total_seconds() - 0.1 < waited < backoff.total_seconds() + 1.5
    finally:
        coordinator.stop()


def test_a_cron_run_is_leased_ahead_and_offered_with_the_wait_until_its_time(
    db_conninfo: str,
) -> None:
    coordinator = CoordinatorThread(db_conninfo).start()
    try:
        with (
            Client(coordinator.address) as client,
            ScriptedAgent(coordinator.address, "scripted") as agent,
        ):
            _connect(agent)
            client.apply(
                Task(
                    name="every-second",
                    command=("true",),
                    triggers=(Cron(expression="* * * * * *"),),
                )
            )
            # On a loaded machine one offer may leave after its occurrence (start_in 0);
            # the next occurrences get their turn, and one of them must come ahead.
            for _ in range(LATE_OFFERS_ALLOWED + 1):
                offer = agent.expect("lease", timeout=10)
                received = datetime.now(UTC)
                occurrence = offer.occurrence.ToDatetime(tzinfo=UTC)
                start_in = offer.start_in.ToTimedelta()
                assert timedelta(0) <= start_in <= LEASE_AHEAD
                if start_in > timedelta(0):
                    break
                assert received >= occurrence - timedelta(milliseconds=20), "no wait given"
                agent.finished(offer.lease, pb.ATTEMPT_OUTCOME_SUCCEEDED, offer.argv)
            assert start_in > timedelta(0), f"{LATE_OFFERS_ALLOWED + 1} offers, all late"
            # Offered before the occurrence, with the wait that is left until it.
            assert received < occurrence
            assert abs((received + start_in) - occurrence) < timedelta(milliseconds=20)
            client.pause("every-second")
    finally:
        coordinator.stop()


def test_a_report_that_deadlocks_is_recorded_on_a_second_try(db_conninfo: str) -> None:
    db = Database(db_conninfo)
    coordinator = CoordinatorThread(db_conninfo).start()
    try:
        with (
            Client(coordinator.address) as client,
            ScriptedAgent(coordinator.address, "scripted") as agent,
            psycopg.connect(db_conninfo, autocommit=False) as other,
        ):
            client.apply(Task(name="locked", command=("true",)))
            _connect(agent)
            run, _ = client.trigger("locked")
            offer = agent.expect("lease")
            agent.started(offer.lease, offer.argv)
            db.wait_run_state(run.id, {"RUNNING"})
            # Another transaction holds the attempt's row, then asks for the run's
            # row, which the coordinator's report transaction locks first: a
            # deadlock, which the coordinator's side detects first (1 s against 30 s).
            other.execute("SET deadlock_timeout = '30s'")
            other.execute("SELECT 1 FROM hydra_attempts WHERE run_id = %s FOR UPDATE", (run.id,))
            finished = pb.AttemptFinished(
                lease=offer.lease, outcome=pb.ATTEMPT_OUTCOME_SUCCEEDED, exit_code=0
            )
            finished.finished_at.FromDatetime(datetime.now(UTC))
            agent.send(attempt_finished=finished)
            wait_for(lambda: _waiting_on_a_lock(db), timeout=10, message="the report to wait")
            other.execute("SELECT 1 FROM hydra_runs WHERE id = %s FOR UPDATE", (run.id,))
            other.rollback()  # it got the row: the report's transaction was the victim
            ack = agent.expect("report_ack", timeout=10)
            assert ack.accepted
            assert _run_row(db, run.id)["state"] == "SUCCEEDED"
            assert agent.heartbeat([]) is not None  # the stream survived the deadlock
    finally:
        coordinator.stop()


def _waiting_on_a_lock(db: Database) -> bool:
    return bool(
        db.value(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
    )
