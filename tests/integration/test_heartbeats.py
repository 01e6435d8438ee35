"""Heartbeats of many agent streams are recorded together, in one transaction a round."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from hydra.coordinator.loops.heartbeats import HeartbeatRecorder, PendingHeartbeat
from hydra.coordinator.specs import apply_spec
from hydra.coordinator.store import Database, Transaction, agents, leases, tasks
from hydra.coordinator.store.records import Heartbeat, LeaseKey, NewRun
from hydra.domain import Concurrency, RunCause, TaskSpec

from support.store import create_manual_run

SHORT = timedelta(seconds=5)
LONG = timedelta(minutes=10)
AGENTS = ("a1", "a2", "a3")


class Rounds:
    """Counts the store's heartbeat transactions and their sizes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        record = leases.record_heartbeats

        async def counted(
            tx: Transaction, heartbeats: list[Heartbeat], *args: object, **kw: object
        ) -> object:
            self.sizes.append(len(heartbeats))
            return await record(tx, heartbeats, *args, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(leases, "record_heartbeats", counted)


async def _leases(store: Database) -> dict[str, LeaseKey]:
    """One run leased (for SHORT) to each agent of AGENTS, connected to coordinator c1."""
    spec = TaskSpec(name="t", command=("true",), concurrency=Concurrency(max_active_runs=10))
    outcome = await apply_spec(store, spec, dry_run=False, now=datetime.now(UTC))
    task_id, _ = await store.run(tasks.task_ref, "t")
    leased = {}
    for i, agent in enumerate(AGENTS):
        await store.run(
            agents.connect,
            agent_id=agent,
            instance_id=agent,
            hostname="h",
            labels={},
            capacity=1,
            version="",
            draining=False,
            coordinator_id="c1",
            ttl=SHORT,
        )
        await create_manual_run(
            store,
            NewRun(
                task_id=task_id,
                task_version=outcome.task.version,
                spec=spec,
                occurrence=datetime.now(UTC) - timedelta(minutes=i + 1),
                cause=RunCause.MANUAL,
            ),
        )
        [claimed] = await store.run(leases.claim, agent, {}, 1, SHORT)
        leased[agent] = (claimed.run_id, claimed.lease_token)
    return leased


def _submit(
    recorder: HeartbeatRecorder, heartbeat: Heartbeat
) -> asyncio.Future[set[LeaseKey] | None]:
    """Submits a heartbeat; the future holds the renewed leases, or None if it failed."""
    answer: asyncio.Future[set[LeaseKey] | None] = asyncio.get_running_loop().create_future()
    recorder.submit(
        PendingHeartbeat(
            heartbeat=heartbeat,
            renewed=answer.set_result,
            failed=lambda: answer.set_result(None),
        )
    )
    return answer


async def _expiry(db_conninfo: str, run_id: str) -> datetime:
    async with await psycopg.AsyncConnection.connect(db_conninfo) as conn:
        cur = await conn.execute(
            "SELECT lease_expires_at - now() FROM hydra_runs WHERE id = %s", [run_id]
        )
        row = await cur.fetchone()
    assert row is not None
    return row[0]


async def test_one_round_renews_every_agents_own_leases_in_one_transaction(
    store: Database, db_conninfo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    leased = await _leases(store)
    rounds = Rounds(monkeypatch)
    recorder = HeartbeatRecorder(store, ttl=LONG, coordinator_id="c1")
    stale = (leased["a1"][0], leased["a1"][1] + 1)
    answers = await asyncio.wait_for(
        asyncio.gather(
            _submit(recorder, Heartbeat(agent_id="a1", leases=(leased["a1"], stale))),
            # a2 lists a1's lease too: only the owner's heartbeat renews a lease
            _submit(recorder, Heartbeat(agent_id="a2", leases=(leased["a2"], leased["a1"]))),
            _submit(recorder, Heartbeat(agent_id="a3", leases=(leased["a3"],), draining=True)),
            _submit(recorder, Heartbeat(agent_id="a3", leases=())),
        ),
        timeout=10,
    )
    assert rounds.sizes == [4]
    assert answers == [{leased["a1"]}, {leased["a2"]}, {leased["a3"]}, set()]
    for run_id, _ in leased.values():
        assert await _expiry(db_conninfo, run_id) > LONG - timedelta(minutes=1)
    known = {a.id: a for a in await store.run(agents.list_agents, include_disconnected=True)}
    # a3 said "draining" in one of its two heartbeats: it is draining
    assert {a: known[a].state for a in AGENTS} == {
        "a1": "connected",
        "a2": "connected",
        "a3": "draining",
    }


async def test_heartbeats_arriving_during_a_round_wait_for_the_next(
    store: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    leased = await _leases(store)
    rounds = Rounds(monkeypatch)
    recorder = HeartbeatRecorder(store, ttl=LONG, coordinator_id="c1", gather=0)
    first = _submit(recorder, Heartbeat(agent_id="a1", leases=(leased["a1"],)))
    await asyncio.sleep(0)  # the round starts, and waits for the server
    later = [
        _submit(recorder, Heartbeat(agent_id=agent, leases=(leased[agent],)))
        for agent in AGENTS
        for _ in range(3)
    ]
    answers = await asyncio.wait_for(asyncio.gather(first, *later), timeout=10)
    assert rounds.sizes == [1, 9]
    assert all(answer for answer in answers)


async def test_a_round_gathers_the_heartbeats_that_arrive_soon_after_the_first(
    store: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    leased = await _leases(store)
    rounds = Rounds(monkeypatch)
    recorder = HeartbeatRecorder(store, ttl=LONG, coordinator_id="c1", gather=0.5)
    answers = [_submit(recorder, Heartbeat(agent_id="a1", leases=(leased["a1"],)))]
    for agent in AGENTS[1:]:
        await asyncio.sleep(0.02)  # streams heartbeat at their own moments
        answers.append(_submit(recorder, Heartbeat(agent_id=agent, leases=(leased[agent],))))
    assert await asyncio.wait_for(asyncio.gather(*answers), timeout=10)
    assert rounds.sizes == [3]


async def test_a_heartbeat_that_cannot_be_recorded_fails_alone(
    store: Database, db_conninfo: str
) -> None:
    leased = await _leases(store)
    recorder = HeartbeatRecorder(store, ttl=LONG, coordinator_id="c1")
    bad = Heartbeat(agent_id="a2", leases=(("not-a-run-id", 1),))
    answers = await asyncio.wait_for(
        asyncio.gather(
            _submit(recorder, Heartbeat(agent_id="a1", leases=(leased["a1"],))),
            _submit(recorder, bad),
            _submit(recorder, Heartbeat(agent_id="a3", leases=(leased["a3"],))),
        ),
        timeout=10,
    )
    assert answers == [{leased["a1"]}, None, {leased["a3"]}]
    assert await _expiry(db_conninfo, leased["a2"][0]) < SHORT
    await recorder.close()


async def test_a_round_gives_way_to_a_report_holding_a_run_and_is_tried_again(
    store: Database, db_conninfo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A report batch that holds a run's row while the round wants it, and may
    # want a row the round holds: the round must neither wait for the server's
    # deadlock detection nor fail its agents.
    leased = await _leases(store)
    rounds = Rounds(monkeypatch)
    recorder = HeartbeatRecorder(store, ttl=LONG, coordinator_id="c1", gather=0)
    async with await psycopg.AsyncConnection.connect(db_conninfo) as report:
        await report.execute("SELECT 1 FROM hydra_runs WHERE id = %s FOR UPDATE", [leased["a2"][0]])
        answers = [
            _submit(recorder, Heartbeat(agent_id=agent, leases=(leased[agent],)))
            for agent in AGENTS
        ]
        await asyncio.sleep(0.3)  # several rounds give way meanwhile
        assert not any(answer.done() for answer in answers)
        await report.commit()
    assert await asyncio.wait_for(asyncio.gather(*answers), timeout=10) == [
        {leased[agent]} for agent in AGENTS
    ]
    assert len(rounds.sizes) >= 3 and set(rounds.sizes) == {3}
    assert store.last_outage == float("-inf")  # a lock conflict is no outage
