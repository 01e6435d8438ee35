"""Chaos actions, chosen by a seeded random generator, and their log.

Every 2-5 s one action: SIGKILL a coordinator (restarted 1-3 s later), SIGKILL
an agent (restarted with the same id 1-3 s later), SIGSTOP an agent for longer
than the lease TTL (then SIGCONT: a zombie wakes up), or restart PostgreSQL
(fast shutdown; started again about 1 s later). A coordinator or agent is only
taken down while another one is up. Restores are pending events, so actions
overlap; a process that exits by itself is recorded and started again.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.chaos.cluster import Cluster
from harness.postgres import EmbeddedServer
from harness.processes import Process

#: Seconds between two actions.
ACTION_GAP_S = (2.0, 5.0)
#: Seconds a killed process stays down.
DOWN_S = (1.0, 3.0)
#: Seconds a stopped agent sleeps beyond the lease TTL.
OVERSLEEP_S = (1.0, 3.0)
#: Seconds PostgreSQL stays down once its shutdown completed.
POSTGRES_DOWN_S = 1.0
#: Attempts at starting PostgreSQL again before the run is given up.
POSTGRES_START_TRIES = 5
TICK_S = 0.05
#: A coordinator that exits this soon after starting, PostgreSQL having been
#: down meanwhile, failed to start because of it (and is started again).
STARTUP_S = 20.0
POSTGRES = "postgres"

#: A pending step: returns None when done, or seconds after which to call it again.
Step = Callable[[], float | None]


class Kind(enum.StrEnum):
    """What a chaos action does."""

    KILL_COORDINATOR = "kill-coordinator"
    KILL_AGENT = "kill-agent"
    STOP_AGENT = "stop-agent"
    RESTART_POSTGRES = "restart-postgres"


#: Actions whose target is an agent: they can make that agent's attempts LOST.
AGENT_KINDS = frozenset({Kind.KILL_AGENT, Kind.STOP_AGENT})


@dataclass
class Action:
    """One chaos action: what, on which target, and from when to when."""

    kind: Kind
    target: str
    at: datetime
    restored_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """The action as JSON."""
        restored = self.restored_at.isoformat() if self.restored_at else None
        return {
            "kind": self.kind.value,
            "target": self.target,
            "at": self.at.isoformat(),
            "restored_at": restored,
        }


@dataclass(frozen=True)
class ProcessExit:
    """A coordinator or agent that exited without being killed."""

    name: str
    exit_code: int | None
    at: datetime
    #: It started shortly before, and PostgreSQL was down meanwhile: a coordinator
    #: cannot start then.
    postgres_down: bool
    log_tail: str

    def to_json(self) -> dict[str, Any]:
        """The exit as JSON (without the log)."""
        return {
            "name": self.name,
            "exit_code": self.exit_code,
            "at": self.at.isoformat(),
            "postgres_down": self.postgres_down,
        }


class ChaosError(RuntimeError):
    """The chaos run could not go on (PostgreSQL would not start again)."""


def utcnow() -> datetime:
    """Wall-clock time, comparable with the database's timestamps (same host)."""
    return datetime.now(UTC)


class Monkey:
    """Takes parts of the cluster down and brings them back, logging each action."""

    def __init__(self, cluster: Cluster, rng: random.Random, lease_ttl: float) -> None:
        self.cluster = cluster
        self.rng = rng
        self.lease_ttl = lease_ttl
        self.actions: list[Action] = []
        self.exits: list[ProcessExit] = []
        #: Names of what chaos took down and has not restored yet.
        self._down: set[str] = set()
        #: When PostgreSQL last came back (monotonic).
        self._outage_ended = float("-inf")
        self._pending: list[tuple[float, int, Step]] = []
        self._order = itertools.count()

    # --- the loop -------------------------------------------------------------

    def run(self, duration: float) -> None:
        """Act every 2-5 s for `duration` seconds (restores keep their own times)."""
        end = time.monotonic() + duration
        next_action = time.monotonic() + self.rng.uniform(*ACTION_GAP_S)
        while (now := time.monotonic()) < end:
            self.tick(now)
            if now >= next_action:
                self._act()
                next_action = now + self.rng.uniform(*ACTION_GAP_S)
            time.sleep(TICK_S)

    def restore_all(self, timeout: float = 120.0) -> None:
        """Bring everything back now: continue, restart, start PostgreSQL; wait for it.

        Raises:
            ChaosError: something could not be restored within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while self._pending or self._down:
            if time.monotonic() > deadline:
                raise ChaosError(f"could not restore {sorted(self._down)} in {timeout:g}s")
            self.tick(float("inf"))
            time.sleep(TICK_S)
        self._supervise()

    @property
    def postgres_down(self) -> bool:
        """PostgreSQL was taken down and is not back yet."""
        return POSTGRES in self._down

    def _run_due(self, now: float) -> None:
        due = []
        while self._pending and self._pending[0][0] <= now:
            due.append(heapq.heappop(self._pending)[2])
        for step in due:
            again = step()
            if again is not None:
                self._later(again, step)

    def _later(self, seconds: float, step: Step) -> None:
        heapq.heappush(self._pending, (time.monotonic() + seconds, next(self._order), step))

    def tick(self, now: float | None = None) -> None:
        """Run the restores due by `now` (default: now); restart what exited by itself."""
        self._run_due(time.monotonic() if now is None else now)
        self._supervise()

    def _supervise(self) -> None:
        """Record and restart coordinators and agents that exited on their own."""
        for process in self.cluster.processes():
            if process.name in self._down or process.running or process.returncode is None:
                continue
            ended = ProcessExit(
                name=process.name,
                exit_code=process.returncode,
                at=utcnow(),
                postgres_down=self._outage_since(process.started_at),
                log_tail=process.last_lines(30),
            )
            self.exits.append(ended)
            self._log(ended.at, f"{process.name} exited by itself with {ended.exit_code}")
            self._down.add(process.name)
            self._later(0.5, self._restart_step(process, None))

    def _outage_since(self, started_at: float) -> bool:
        """PostgreSQL was down at some time since `started_at` (monotonic), lately."""
        if self.postgres_down or self.cluster.server.starting:
            return True
        return time.monotonic() - started_at < STARTUP_S and self._outage_ended > started_at

    # --- choosing -------------------------------------------------------------

    def _act(self) -> None:
        choices = self._choices()
        if not choices:
            return
        kind = self.rng.choice(sorted(choices))
        target = self.rng.choice(choices[kind])
        {
            Kind.KILL_COORDINATOR: self._kill_process,
            Kind.KILL_AGENT: self._kill_process,
            Kind.STOP_AGENT: self._stop_agent,
            Kind.RESTART_POSTGRES: self._restart_postgres,
        }[kind](kind, target)

    def _choices(self) -> dict[Kind, list[str]]:
        """Each possible kind of action, with its possible targets."""
        coordinators = self._up([c.process for c in self.cluster.coordinators])
        agents = self._up([a.process for a in self.cluster.agents])
        choices: dict[Kind, list[str]] = {}
        if len(coordinators) >= 2:
            choices[Kind.KILL_COORDINATOR] = coordinators
        if len(agents) >= 2:
            choices[Kind.KILL_AGENT] = agents
            choices[Kind.STOP_AGENT] = agents
        if self.cluster.server.owned and not self.postgres_down:
            choices[Kind.RESTART_POSTGRES] = [POSTGRES]
        return choices

    def _up(self, processes: list[Process]) -> list[str]:
        return sorted(p.name for p in processes if p.running and p.name not in self._down)

    # --- actions --------------------------------------------------------------

    def _record(self, kind: Kind, target: str) -> Action:
        action = Action(kind=kind, target=target, at=utcnow())
        self.actions.append(action)
        self._down.add(target)
        self._log(action.at, f"{kind} {target}")
        return action

    def _restored(self, action: Action) -> None:
        action.restored_at = utcnow()
        self._log(action.restored_at, f"{action.kind} {action.target}: restored")

    def _log(self, at: datetime, line: str) -> None:
        """Append to ``chaos.log`` in the work directory, as it happens."""
        with open(self.cluster.work_dir / "chaos.log", "a") as log:
            log.write(f"{at.isoformat()} {line}\n")

    def _process(self, name: str) -> Process:
        return next(p for p in self.cluster.processes() if p.name == name)

    def _kill_process(self, kind: Kind, target: str) -> None:
        process = self._process(target)
        action = self._record(kind, target)
        process.kill()
        self._later(self.rng.uniform(*DOWN_S), self._restart_step(process, action))

    def _restart_step(self, process: Process, action: Action | None) -> Step:
        is_coordinator = any(c.process is process for c in self.cluster.coordinators)

        def restart() -> float | None:
            if is_coordinator and (self.postgres_down or self.cluster.server.starting):
                return 0.2  # it would only fail to migrate
            process.start()
            self._down.discard(process.name)
            if action is not None:
                self._restored(action)
            return None

        return restart

    def _stop_agent(self, kind: Kind, target: str) -> None:
        process = self._process(target)
        action = self._record(kind, target)
        process.suspend()

        def resume() -> None:
            process.resume()
            self._down.discard(target)
            self._restored(action)

        self._later(self.lease_ttl + self.rng.uniform(*OVERSLEEP_S), resume)

    def _restart_postgres(self, kind: Kind, target: str) -> None:
        server = self.cluster.server
        assert isinstance(server, EmbeddedServer)
        action = self._record(kind, target)
        server.begin_stop()
        tries = itertools.count(1)

        def wait_stopped() -> float | None:
            if not server.down:
                return 0.05  # the fast shutdown is still under way
            self._later(POSTGRES_DOWN_S, start)
            return None

        def start() -> float | None:
            server.begin_start()
            self._later(0.1, wait_started)
            return None

        def wait_started() -> float | None:
            started = server.start_finished()
            if started is None:
                return 0.1
            if not started:
                if next(tries) >= POSTGRES_START_TRIES:
                    raise ChaosError(f"PostgreSQL did not start again; see {server.log_path}")
                self._later(1.0, start)
                return None
            self._down.discard(target)
            self._outage_ended = time.monotonic()
            self._restored(action)
            return None

        self._later(0.05, wait_stopped)
