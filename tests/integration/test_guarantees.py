"""The guarantees of docs/architecture.md under failure: stale fencing tokens,
zombie agents, coordinator crashes and outages, racing dispatchers, agent
failover. Real coordinators (in threads, or as processes where one must die by
SIGKILL), real agent processes, real PostgreSQL; each test fails if its
guarantee is broken."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

import pytest

from harness.hydra import LeaseTiming, coordinator_argv
from harness.net import free_port, listening
from harness.processes import Process, is_alive
from harness.wait import wait_for
from hydra.client import (
    Catchup,
    Client,
    Concurrency,
    Cron,
    Interval,
    Retry,
    RunState,
    Task,
)
from hydra.v1 import agent_service_pb2 as pb

from support.agent_double import ScriptedAgent
from support.cluster import FAST_TIMES, AgentProcess, CoordinatorThread, Database, cluster

SECOND = timedelta(seconds=1)
TTL_S = FAST_TIMES.ttl.total_seconds()
ACTIVE = ("QUEUED", "LEASED", "RUNNING")

# --- processes ----------------------------------------------------------------


def _group_alive(pgid: int) -> bool:
    """True while any living process is in process group `pgid`."""
    with os.scandir("/proc") as entries:
        pids = [entry.name for entry in entries if entry.name.isdigit()]
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _kill_groups(pgids: list[int]) -> None:
    """SIGKILL what is left of attempts' process groups (they outlive a stopped agent)."""
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def _read_pids(path: Path, count: int, timeout: float = 20) -> list[int]:
    """The first `count` pids the attempts wrote to `path`, once they have."""

    def written() -> list[int] | None:
        pids = _pids_so_far(path)
        return pids if len(pids) >= count else None

    return wait_for(written, timeout=timeout, message=f"{count} pid(s) in {path.name}")


def _pids_so_far(path: Path) -> list[int]:
    """Every pid the attempts wrote to `path` so far."""
    return [int(line) for line in path.read_text().split()] if path.exists() else []


class CoordinatorProcess(Process):
    """A real `hydra coordinator` process on a fixed port, so that it can die by
    SIGKILL and come back where its agents look for it."""

    def __init__(self, conninfo: str, coordinator_id: str, log_path: Path, port: int = 0) -> None:
        self.coordinator_id = coordinator_id
        self.port = port or free_port()
        timing = LeaseTiming(
            ttl=f"{FAST_TIMES.ttl.total_seconds():g}s",
            heartbeat=f"{FAST_TIMES.heartbeat_interval.total_seconds() * 1000:g}ms",
            kill_grace=f"{FAST_TIMES.kill_grace.total_seconds():g}s",
        )
        argv = coordinator_argv(
            conninfo,
            self.address,
            timing=timing,
            coordinator_id=coordinator_id,
            pool=4,
            log_level=None,
        )
        super().__init__(coordinator_id, argv, log_path, env=os.environ)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Start (or start again), and return once it listens."""
        super().start()
        wait_for(self._ready, timeout=30, message=f"{self.coordinator_id} to listen")
        return self

    def _ready(self) -> bool:
        self.check_running()
        return listening(self.port)


# --- what the database says ---------------------------------------------------------


def _snapshot(db: Database, run_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The run's row and its attempts' rows, exactly as stored."""
    return db.rows("SELECT * FROM hydra_runs WHERE id = %s", run_id), db.attempts(run_id)


def _attempt_summary(db: Database, run_id: str) -> list[tuple[str, str]]:
    return [(a["state"], a["agent_id"]) for a in db.attempts(run_id)]


def _count(db: Database, task: str, states: tuple[str, ...]) -> int:
    return sum(run["state"] in states for run in db.runs(task))


def _wait_connected(db: Database, agent_id: str, coordinator_id: str, timeout: float = 20) -> None:
    wait_for(
        lambda: db.value(
            "SELECT count(*) FROM hydra_agents WHERE id = %s AND coordinator_id = %s "
            "AND state = 'connected'",
            agent_id,
            coordinator_id,
        ),
        timeout=timeout,
        message=f"agent {agent_id} to be connected to {coordinator_id}",
    )


def _wait_all_terminal(db: Database, task: str, timeout: float = 30) -> None:
    try:
        wait_for(
            lambda: db.runs(task) and _count(db, task, ACTIVE) == 0,
            timeout=timeout,
            message=f"every run of {task} to end",
        )
    except AssertionError as error:
        states = Counter(run["state"] for run in db.runs(task))
        raise AssertionError(f"{error}; runs by state: {dict(states)}") from None


def _assert_each_success_counted_once(db: Database, task: str) -> None:
    for run in db.runs(task):
        states = [a["state"] for a in db.attempts(run["id"])]
        assert run["state"] == "SUCCEEDED", (run["occurrence"], run["state"], run["reason"])
        assert states.count("SUCCEEDED") == 1, (run["occurrence"], states)


def _seconds(first: datetime, last: datetime) -> list[datetime]:
    """Every whole second in [first, last]."""
    start = first.replace(microsecond=0) + (SECOND if first.microsecond else timedelta(0))
    return [start + n * SECOND for n in range(int((last - start) / SECOND) + 1)]


class _Part(Protocol):
    def start(self) -> object: ...
    def stop(self) -> object: ...


_S = TypeVar("_S", bound=_Part)


def _stopped_later(stack: contextlib.ExitStack, part: _S) -> _S:
    """Starts a coordinator or agent, to be stopped when `stack` closes."""
    stack.callback(part.stop)
    part.start()
    return part


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --- 2: a stale token over the real stream -------------------------------------------


def test_a_report_under_a_stale_lease_token_is_refused_and_changes_nothing(
    db_conninfo: str, tmp_path: Path
) -> None:
    db = Database(db_conninfo)
    coordinator = CoordinatorThread(db_conninfo, name="coordinator-0").start()
    real_agent = AgentProcess("real", [coordinator.address], log_path=tmp_path / "agent.log")
    try:
        with (
            Client(coordinator.address) as client,
            ScriptedAgent(coordinator.address, "zombie") as zombie,
        ):
            client.apply(
                Task(
                    name="fenced",
                    command=("true",),
                    retry=Retry(max_attempts=2, backoff=timedelta(0)),
                )
            )
            zombie.hello()
            run, _ = client.trigger("fenced")
            offer = zombie.expect("lease")
            assert offer.lease.run_id == run.id
            zombie.started(offer.lease, offer.argv)
            db.wait_run_state(run.id, {"RUNNING"})
            # The zombie takes no more work and never renews its lease: after the
            # TTL the reaper takes the run back.
            zombie.heartbeat([], draining=True)
            db.wait_run_state(run.id, {"QUEUED"}, timeout=TTL_S + 10)
            assert _attempt_summary(db, run.id) == [("LOST", "zombie")]
            # Queued again, the run still carries the zombie's token: only its state
            # tells that the lease is gone.
            queued = _snapshot(db, run.id)
            assert queued[0][0]["lease_token"] == offer.lease.lease_token
            ack = zombie.finished(offer.lease, pb.ATTEMPT_OUTCOME_SUCCEEDED, offer.argv)
            assert not ack.accepted
            assert _snapshot(db, run.id) == queued

            real_agent.start()
            assert client.wait(run.id, timeout=30).state is RunState.SUCCEEDED
            before = _snapshot(db, run.id)

            ack = zombie.finished(offer.lease, pb.ATTEMPT_OUTCOME_SUCCEEDED, offer.argv)
            assert (ack.lease, ack.accepted) == (offer.lease, False)
            assert "stale" in ack.reason
            assert list(zombie.heartbeat([offer.lease]).revoked) == [offer.lease]
            zombie.started(offer.lease, offer.argv)  # a replayed start is cancelled
            assert zombie.expect("cancel").lease == offer.lease
            ack = zombie.finished(offer.lease, pb.ATTEMPT_OUTCOME_FAILED, offer.argv)
            assert not ack.accepted

            assert _snapshot(db, run.id) == before
            assert _attempt_summary(db, run.id) == [("LOST", "zombie"), ("SUCCEEDED", "real")]
    finally:
        real_agent.stop()
        coordinator.stop()


def test_a_start_that_comes_after_the_cancel_is_recorded_as_a_cancelled_attempt(
    db_conninfo: str,
) -> None:
    """The agent started the process, the run was cancelled before that start was
    recorded: the attempt is in the record, ended CANCELLED, once, and the agent
    is told to kill it; nothing else of the run changes."""
    db = Database(db_conninfo)
    coordinator = CoordinatorThread(db_conninfo, name="coordinator-0").start()
    try:
        with (
            Client(coordinator.address) as client,
            ScriptedAgent(coordinator.address, "late") as agent,
        ):
            client.apply(Task(name="cancelled-early", command=("sleep", "60")))
            agent.hello()
            run, _ = client.trigger("cancelled-early")
            offer = agent.expect("lease")
            assert client.cancel(run.id, "not today").state is RunState.CANCELLED
            assert agent.expect("cancel").lease == offer.lease  # told at the cancel
            assert db.attempts(run.id) == []
            agent.started(offer.lease, offer.argv)  # the start was in flight
            assert agent.expect("cancel").lease == offer.lease  # told again: kill it
            [attempt] = db.attempts(run.id)
            assert (attempt["state"], attempt["agent_id"]) == ("CANCELLED", "late")
            assert attempt["lease_token"] == offer.lease.lease_token
            assert list(attempt["argv"]) == list(offer.argv)
            assert attempt["finished_at"] is not None and "not today" in attempt["message"]
            [row], _ = _snapshot(db, run.id)
            assert (row["state"], row["attempts_used"]) == ("CANCELLED", 1)
            agent.started(offer.lease, offer.argv)  # a replay records nothing more
            assert agent.expect("cancel").lease == offer.lease
            assert _snapshot(db, run.id) == ([row], [attempt])
            ack = agent.finished(offer.lease, pb.ATTEMPT_OUTCOME_CANCELLED, offer.argv)
            assert not ack.accepted and _snapshot(db, run.id) == ([row], [attempt])
    finally:
        coordinator.stop()


# --- 2 and 5: a zombie agent wakes up ---------------------------------------------------


def test_a_zombie_agent_kills_its_attempt_on_waking_and_its_late_report_counts_for_nothing(
    db_conninfo: str, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    # The first attempt would run for long after its agent wakes; the retry is short.
    script = f'echo $$ >> {pids}; if [ "$HYDRA_ATTEMPT" = 1 ]; then sleep 30; else sleep 2; fi'
    db = Database(db_conninfo)
    with (
        contextlib.ExitStack() as stack,
        cluster(db_conninfo, tmp_path, agents=2, capacity=1) as (coordinators, agents),
    ):
        client = stack.enter_context(Client(coordinators[0].address))
        client.apply(
            Task(
                name="zombie",
                command=("sh", "-c", script),
                retry=Retry(max_attempts=2, backoff=timedelta(0)),
            )
        )
        run, _ = client.trigger("zombie")
        first_pid = _read_pids(pids, 1)[0]  # the attempt's process group, too
        holder = db.wait_run_state(run.id, {"RUNNING"})["lease_owner"]
        zombie = next(agent for agent in agents if agent.agent_id == holder)
        other = next(agent for agent in agents if agent is not zombie)
        try:
            zombie.signal(signal.SIGSTOP)  # the agent only: its attempt runs on
            wait_for(
                lambda: (
                    _attempt_summary(db, run.id)
                    == [("LOST", zombie.agent_id), ("RUNNING", other.agent_id)]
                ),
                timeout=TTL_S + 15,
                message="the first attempt LOST and the second RUNNING on the other agent",
            )
            lost = db.attempts(run.id)[0]
            assert is_alive(first_pid), "the zombie's attempt runs on while the zombie sleeps"
            zombie.signal(signal.SIGCONT)
            woke = time.monotonic()
            wait_for(
                lambda: not _group_alive(first_pid),
                timeout=10,
                message="the zombie to kill its attempt's process group",
            )
            fenced_after = time.monotonic() - woke
            final = client.wait(run.id, timeout=20)
        finally:
            zombie.signal(signal.SIGCONT)
            _kill_groups(_pids_so_far(pids))
    assert fenced_after < 3, f"killed {fenced_after:.1f}s after waking"
    assert final.state is RunState.SUCCEEDED
    assert _attempt_summary(db, run.id) == [
        ("LOST", zombie.agent_id),
        ("SUCCEEDED", other.agent_id),
    ]
    # Its FENCED report is refused, or dropped by the agent itself once the coordinator
    # revokes the lease on reconnect: either way the attempt stays as the reaper left it.
    assert db.attempts(run.id)[0] == lost, "the zombie's late report changed its attempt"
    assert "FENCED: lease could not be renewed" in zombie.log(), "it did not fence itself"


# --- 3: no lost occurrences across coordinator crashes -------------------------------------


def test_a_coordinator_killed_mid_stream_and_restarted_loses_and_doubles_no_occurrence(
    db_conninfo: str, tmp_path: Path
) -> None:
    db = Database(db_conninfo)
    with contextlib.ExitStack() as stack:
        survivor = _stopped_later(stack, CoordinatorThread(db_conninfo, name="coordinator-t"))
        victim = CoordinatorProcess(db_conninfo, "coordinator-p", tmp_path / "coordinator-p.log")
        _stopped_later(stack, victim)
        targets = [victim.address, survivor.address]
        _stopped_later(stack, AgentProcess("agent-0", targets, log_path=tmp_path / "agent.log"))
        _wait_connected(db, "agent-0", "coordinator-p")
        client = stack.enter_context(Client([survivor.address, victim.address]))
        client.apply(
            Task(
                name="tick",
                command=("true",),
                triggers=(Cron(expression="* * * * * *"),),
                catchup=Catchup.ALL,
                concurrency=Concurrency(max_active_runs=5),
            )
        )
        wait_for(lambda: _count(db, "tick", ("SUCCEEDED",)) >= 3, timeout=20)
        killed_at = _utcnow()
        victim.kill()  # its agent's stream breaks; the agent moves to the survivor
        time.sleep(2)  # stay dead for a while, on purpose
        victim.start()
        restarted_at = _utcnow()
        done = _count(db, "tick", ("SUCCEEDED",))
        wait_for(lambda: _count(db, "tick", ("SUCCEEDED",)) >= done + 3, timeout=20)
        client.pause("tick")
        _wait_all_terminal(db, "tick")
    occurrences = [run["occurrence"] for run in db.runs("tick")]
    assert occurrences[0] < killed_at and occurrences[-1] > restarted_at
    assert occurrences == _seconds(occurrences[0], occurrences[-1])
    _assert_each_success_counted_once(db, "tick")


#: README, "Missed occurrences": with catchup none, an occurrence found more than
#: this late counts as missed (and anything sooner as on time).
MISSED_AFTER = timedelta(seconds=5)


@dataclass(frozen=True)
class Outage:
    """When every coordinator was down."""

    down_at: datetime
    up_at: datetime
    #: How long the new coordinator took to start (it fires what is due at once).
    restart_s: float


def _outage(
    conninfo: str, tasks: list[Task], *, stop_at: datetime, restart_at: datetime, until: datetime
) -> Outage:
    """A coordinator runs `tasks` until `stop_at`; none runs until `restart_at`; then
    one does until every task has a run for `until` or later.

    A coordinator in a thread starts in a few hundredths of a second, so it
    finds what came due during the outage about `restart_at` late.
    """
    db = Database(conninfo)
    first = CoordinatorThread(conninfo, name="before").start()
    try:
        with Client(first.address) as client:
            for task in tasks:
                client.apply(task)
        _sleep_until(stop_at)  # on purpose: the coordinator works until then
    finally:
        first.stop()
    down_at = _utcnow()
    _sleep_until(restart_at)  # on purpose: every coordinator stays down
    up_at = _utcnow()
    second = CoordinatorThread(conninfo, name="after").start()
    restart_s = (_utcnow() - up_at).total_seconds()
    try:
        wait_for(
            lambda: all(db.runs(t.name)[-1]["occurrence"] >= until for t in tasks),
            timeout=(until - up_at).total_seconds() + 10,
            message="every task to fire again",
        )
    finally:
        second.stop()
    return Outage(down_at=down_at, up_at=up_at, restart_s=restart_s)


def _sleep_until(instant: datetime) -> None:
    time.sleep(max(0.0, (instant - _utcnow()).total_seconds()))


def _next_second(after: float = 1.0) -> datetime:
    """The first whole second at least `after` seconds from now."""
    return (_utcnow() + timedelta(seconds=after + 1)).replace(microsecond=0)


def _catching_up(name: str, catchup: Catchup, trigger: Cron | Interval) -> Task:
    return Task(
        name=name,
        command=("true",),
        triggers=(trigger,),
        catchup=catchup,
        concurrency=Concurrency(max_active_runs=100),
    )


def _occurrences(db: Database, task: str) -> list[datetime]:
    occurrences = [run["occurrence"] for run in db.runs(task)]
    assert len(occurrences) == len(set(occurrences)), f"{task}: an occurrence has two runs"
    return occurrences


def test_after_every_coordinator_was_down_catchup_all_runs_every_missed_second_latest_one(
    db_conninfo: str,
) -> None:
    db = Database(db_conninfo)
    every_second = Cron(expression="* * * * * *")
    tasks = [
        _catching_up("all", Catchup.ALL, every_second),
        _catching_up("latest", Catchup.LATEST, every_second),
    ]
    epoch = _next_second()
    # Down from half a second after epoch+2 to 0.6 s after epoch+5: seconds 3 to 5 missed.
    outage = _outage(
        db_conninfo,
        tasks,
        stop_at=epoch + 2.5 * SECOND,
        restart_at=epoch + 5.6 * SECOND,
        until=epoch + 7 * SECOND,
    )
    missed = [epoch + n * SECOND for n in (3, 4, 5)]
    assert outage.down_at < missed[0] and missed[-1] < outage.up_at

    every = _occurrences(db, "all")
    assert every == _seconds(every[0], every[-1]), "catchup all: an occurrence was lost"
    assert every[0] <= epoch and every[-1] >= epoch + 7 * SECOND

    latest = _occurrences(db, "latest")
    caught_up = [o for o in latest if outage.down_at < o < outage.up_at]
    assert caught_up == missed[-1:], (
        f"catchup latest ran {caught_up} of the missed {missed} "
        f"(the restart took {outage.restart_s:.2f}s)"
    )
    assert set(_seconds(latest[0], latest[-1])) - set(latest) == set(missed[:-1])


def test_after_every_coordinator_was_down_catchup_none_runs_no_occurrence_found_late(
    db_conninfo: str,
) -> None:
    db = Database(db_conninfo)
    epoch = _next_second()
    every_6s = Interval(every=6 * SECOND, anchor=epoch)
    tasks = [
        _catching_up("none", Catchup.NONE, every_6s),
        _catching_up("latest", Catchup.LATEST, every_6s),
    ]
    # Fires at epoch; down from epoch+3 until 5.5 s after the occurrence at epoch+6.
    missed = epoch + 6 * SECOND
    outage = _outage(
        db_conninfo,
        tasks,
        stop_at=epoch + 3 * SECOND,
        restart_at=missed + MISSED_AFTER + 0.5 * SECOND,
        until=epoch + 12 * SECOND,
    )
    assert outage.down_at < missed < outage.up_at - MISSED_AFTER
    on_time = [epoch, epoch + 12 * SECOND]
    assert _occurrences(db, "latest") == [epoch, missed, *on_time[1:]], (
        f"the restart took {outage.restart_s:.2f}s"
    )
    none = db.runs("none")
    late = [(r["occurrence"], r["created_at"] - r["occurrence"]) for r in none]
    assert [r["occurrence"] for r in none] == on_time, f"catchup none ran (and how late): {late}"


# --- 1: racing coordinators never double-lease --------------------------------------------


def test_three_coordinators_racing_over_200_runs_lease_and_start_each_exactly_once(
    db_conninfo: str, tmp_path: Path
) -> None:
    db = Database(db_conninfo)
    started = tmp_path / "started"
    with contextlib.ExitStack() as stack:
        for n in range(3):  # agent n talks to coordinator n only
            coordinator = CoordinatorThread(db_conninfo, name=f"coordinator-{n}")
            _stopped_later(stack, coordinator)
            log_path = tmp_path / f"agent-{n}.log"
            agent = AgentProcess(f"agent-{n}", [coordinator.address], capacity=8, log_path=log_path)
            _stopped_later(stack, agent)
        for n in range(3):
            _wait_connected(db, f"agent-{n}", f"coordinator-{n}")
        client = stack.enter_context(Client(coordinator.address))
        client.apply(
            Task(
                name="many",
                command=("sh", "-c", f"echo $HYDRA_RUN_ID >> {started}"),
                # Yearly, so nothing fires by itself during the test; a backfill of
                # 200 past years makes 200 due runs in one transaction.
                triggers=(Cron(expression="0 0 1 1 *"),),
                concurrency=Concurrency(max_active_runs=1000),
            )
        )
        backfill = client.backfill(
            "many", datetime(1800, 1, 1, tzinfo=UTC), datetime(1999, 1, 1, tzinfo=UTC)
        )
        assert len(backfill.created) == 200
        _wait_all_terminal(db, "many", timeout=60)
    runs = db.runs("many")
    attempts = db.rows("SELECT * FROM hydra_attempts ORDER BY run_id, number")
    assert {run["state"] for run in runs} == {"SUCCEEDED"}
    assert sorted(a["run_id"] for a in attempts) == sorted(run["id"] for run in runs)
    assert len({a["lease_token"] for a in attempts}) == len(attempts)
    token_of_run = {run["id"]: run["lease_token"] for run in runs}
    assert all(token_of_run[a["run_id"]] == a["lease_token"] for a in attempts)
    executed = started.read_text().split()
    assert sorted(executed) == sorted(str(run["id"]) for run in runs), "a run started twice"
    assert len({a["agent_id"] for a in attempts}) == 3, "the coordinators did not all race"


# --- an agent fails over to another coordinator and keeps its attempt -----------------------


def _first_coordinator(
    stack: contextlib.ExitStack, conninfo: str, tmp_path: Path, how: str
) -> tuple[str, Callable[[], None]]:
    """Coordinator 1: its address, and how it goes away (`graceful-stop` or `sigkill`)."""
    if how == "graceful-stop":
        thread = _stopped_later(stack, CoordinatorThread(conninfo, name="coordinator-1"))
        return thread.address, thread.stop
    process = CoordinatorProcess(conninfo, "coordinator-1", tmp_path / "coordinator-1.log")
    _stopped_later(stack, process)
    return process.address, process.kill


@pytest.mark.parametrize("how", ["graceful-stop", "sigkill"])
def test_an_agent_whose_coordinator_goes_away_keeps_its_attempt_on_another(
    db_conninfo: str, tmp_path: Path, how: str
) -> None:
    pids = tmp_path / "pids"
    db = Database(db_conninfo)
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: _kill_groups(_pids_so_far(pids)))
        second = _stopped_later(stack, CoordinatorThread(db_conninfo, name="coordinator-2"))
        address, go_away = _first_coordinator(stack, db_conninfo, tmp_path, how)
        agent = AgentProcess("agent-0", [address, second.address], log_path=tmp_path / "a.log")
        _stopped_later(stack, agent)
        _wait_connected(db, "agent-0", "coordinator-1")
        client = stack.enter_context(Client([second.address]))
        client.apply(Task(name="long", command=("sh", "-c", f"echo $$ >> {pids}; sleep 5")))
        run, _ = client.trigger("long")
        _read_pids(pids, 1)
        leased = db.wait_run_state(run.id, {"RUNNING"})
        go_away()
        _wait_connected(db, "agent-0", "coordinator-2", timeout=TTL_S + 10)
        final = client.wait(run.id, timeout=20)
    assert final.state is RunState.SUCCEEDED
    attempts = db.attempts(run.id)
    assert [(a["state"], a["lease_token"]) for a in attempts] == [
        ("SUCCEEDED", leased["lease_token"])
    ]
    assert len(pids.read_text().split()) == 1, "the attempt was started again"
    assert f"connected to {second.address}" in agent.log()
