"""The leases an agent holds, across streams and reconnections.

A lease is held from the offer until the coordinator acknowledges the
attempt's report: while its preconditions are checked (if it has any), while
its process is spawned (in the background: taking an offer never waits for a
process) and runs, then as a pending report. A revoked lease is dropped at
once; its process is still killed and waited for, but its end is reported to
nobody. A lease whose preconditions do not all hold is dropped once the
verdicts are out: the coordinator re-queues its run without using an attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from hydra.agent.attempt import AttemptResult, AttemptSpec, OutputStream, Started
from hydra.agent.executor import NO_ISOLATION, Execution
from hydra.agent.isolation import Isolation
from hydra.agent.metrics import AgentMetrics
from hydra.agent.output import OutputsDirectory
from hydra.agent.preconditions import MAX_CONCURRENT_CHECKS, Check, evaluate_all
from hydra.domain import AttemptOutcome, LeaseKey, PreconditionVerdict

log = logging.getLogger("hydra.agent")


class LeaseListener(Protocol):
    """Told what held attempts produce; the daemon relays it to the current stream."""

    def attempt_output(self, lease: LeaseKey, stream: OutputStream, data: bytes) -> bool:
        """A batch of output of a held attempt; False if it could not be sent."""

    def attempt_started(self, lease: LeaseKey, argv: Sequence[str], started: Started) -> None:
        """A held attempt's process was spawned."""

    def attempt_finished(self, lease: LeaseKey, result: AttemptResult) -> None:
        """A held attempt ended; its report is now pending."""

    def preconditions_checked(self, lease: LeaseKey, verdicts: list[PreconditionVerdict]) -> None:
        """A held lease's preconditions were evaluated; if all hold, its attempt starts next."""


@dataclass(eq=False)
class _Running:
    execution: Execution
    #: time.monotonic() from which the lease is known to be valid for a TTL.
    renewed_at: float
    #: False once revoked: the end is then reported to nobody.
    reported: bool = True


@dataclass(eq=False)
class _Checking:
    spec: AttemptSpec
    #: time.monotonic() from which the lease is known to be valid for a TTL.
    renewed_at: float
    task: asyncio.Task[None] | None = None


class LeaseBook:
    """Running attempts and pending reports, keyed by lease.

    The book owns the agent's directory of ``$HYDRA_OUTPUT`` files; :meth:`close`
    removes it.
    """

    def __init__(
        self,
        listener: LeaseListener,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_concurrent_checks: int = MAX_CONCURRENT_CHECKS,
        outputs: OutputsDirectory | None = None,
        isolation: Isolation = NO_ISOLATION,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self._listener = listener
        self._metrics = metrics if metrics is not None else AgentMetrics()
        self._clock = clock
        self._isolation = isolation
        self._outputs = outputs or OutputsDirectory()
        self._checking: dict[LeaseKey, _Checking] = {}
        self._running: dict[LeaseKey, _Running] = {}
        self._pending: dict[LeaseKey, AttemptResult] = {}
        #: One per process: spawns it, waits for its end, reports it.
        self._attempts: set[asyncio.Task[None]] = set()
        self._check_tasks: set[asyncio.Task[None]] = set()
        #: Turns for precondition checks, shared by every lease of the agent.
        self._check_turns = asyncio.Semaphore(max_concurrent_checks)
        self._changed = asyncio.Event()

    # --- what is held ---------------------------------------------------------

    def held(self) -> list[LeaseKey]:
        """Every lease held: attempts running, checks, then reports not yet acknowledged."""
        running = [lease for lease, entry in self._running.items() if entry.reported]
        return running + list(self._checking) + list(self._pending)

    def active(self) -> int:
        """Leases being checked or running an attempt: the slots in use."""
        running = sum(1 for entry in self._running.values() if entry.reported)
        return running + len(self._checking)

    def checking(self, lease: LeaseKey) -> bool:
        """The lease's preconditions are being evaluated."""
        return lease in self._checking

    def execution(self, lease: LeaseKey) -> Execution | None:
        """The running attempt of a held lease."""
        entry = self._running.get(lease)
        return entry.execution if entry and entry.reported else None

    def pending(self) -> list[tuple[LeaseKey, AttemptResult]]:
        """Reports not yet acknowledged, oldest first."""
        return list(self._pending.items())

    def report(self, lease: LeaseKey) -> AttemptResult | None:
        """The pending report of a lease."""
        return self._pending.get(lease)

    def processes(self) -> int:
        """Processes spawning or running, revoked ones included."""
        return len(self._running)

    @property
    def idle(self) -> bool:
        """Nothing is checked or runs, and nothing waits for an acknowledgement."""
        return not self._checking and not self._running and not self._pending

    # --- changes --------------------------------------------------------------

    def start(self, lease: LeaseKey, spec: AttemptSpec, *, start_in: float = 0.0) -> None:
        """Holds the lease, using a slot, and spawns its attempt in the background,
        ``start_in`` seconds from now (a run leased ahead of its time).

        The lease is held until its report is acknowledged. The listener hears
        of the start once the process is spawned, before any output or end of
        it; a spawn that fails is reported like any end (FAILED, "cannot
        start: ..."), and so is a kill before the spawn.
        """
        self._start(lease, spec, renewed_at=self._clock(), at=_monotonic_in(start_in))

    def check(
        self, lease: LeaseKey, spec: AttemptSpec, checks: Sequence[Check], *, start_in: float = 0.0
    ) -> None:
        """Holds the lease, using a slot, while its preconditions are evaluated in the
        background, ``start_in`` seconds from now.

        The listener then hears the verdicts. If every check holds, the attempt
        starts at once; if not, the lease is forgotten. A lease revoked,
        killed or abandoned meanwhile has its checks stopped and nothing told.
        """
        entry = _Checking(spec, renewed_at=self._clock())
        entry.task = asyncio.create_task(
            self._check(lease, entry, checks, at=_monotonic_in(start_in))
        )
        self._checking[lease] = entry
        self._check_tasks.add(entry.task)
        entry.task.add_done_callback(self._check_tasks.discard)
        self._notify()

    def _start(
        self, lease: LeaseKey, spec: AttemptSpec, *, renewed_at: float, at: float | None = None
    ) -> None:
        execution = Execution(
            spec,
            on_output=lambda stream, data: self._output(lease, stream, data),
            outputs=self._outputs,
            isolation=self._isolation,
        )
        entry = _Running(execution, renewed_at=renewed_at)
        self._running[lease] = entry  # held, and using a slot, while it spawns
        task = asyncio.create_task(self._attempt(lease, entry, at))
        self._attempts.add(task)
        task.add_done_callback(self._attempts.discard)
        self._notify()

    def kill(self, lease: LeaseKey, outcome: AttemptOutcome, message: str) -> bool:
        """Kills the attempt of a held lease, or stops its checks (telling nobody).

        False if the lease has neither.
        """
        if self._stop_checking(lease, f"{outcome}: {message}"):
            return True
        execution = self.execution(lease)
        if execution is None:
            return False
        if not execution.killing:
            log.info("lease %s: killing (%s: %s)", lease, outcome, message)
        execution.kill(outcome, message)
        return True

    def kill_all(self, outcome: AttemptOutcome, message: str, *, immediately: bool = False) -> None:
        """Kills every process, revoked ones included."""
        for lease, entry in self._running.items():
            if not entry.execution.killing:
                log.info("lease %s: killing (%s: %s)", lease, outcome, message)
            entry.execution.kill(outcome, message, immediately=immediately)

    def interrupt_output(self) -> None:
        """The stream that carried live output is gone: running attempts stream no
        more of it (what the coordinator holds stays a prefix); their ends carry the tails."""
        for entry in self._running.values():
            entry.execution.stop_live_output()

    def stop_all_checks(self, reason: str) -> list[LeaseKey]:
        """Stops every lease's checks and forgets those leases; returns them."""
        leases = list(self._checking)
        for lease in leases:
            self._stop_checking(lease, reason)
        return leases

    def revoke(self, lease: LeaseKey) -> None:
        """Forgets a lease that is no longer current, killing its process unreported."""
        if self._stop_checking(lease, "revoked by the coordinator"):
            return
        entry = self._running.get(lease)
        if entry is not None and entry.reported:
            entry.reported = False
            entry.execution.kill(AttemptOutcome.CANCELLED, "lease revoked")
            log.warning("lease %s: revoked by the coordinator; killing its process", lease)
        elif self._pending.pop(lease, None) is not None:
            # Either the report was recorded and its acknowledgement is on its way
            # (a heartbeat recorded after it), or it would be refused.
            log.info("lease %s: no longer current; its report is not sent again", lease)
        self._notify()

    def acknowledge(self, lease: LeaseKey) -> AttemptResult | None:
        """Forgets a report the coordinator answered; None if it was not pending."""
        result = self._pending.pop(lease, None)
        self._notify()
        return result

    def renew(self, leases: Iterable[LeaseKey], at: float) -> None:
        """Records that ``leases`` are valid for a TTL from ``at`` (monotonic)."""
        for lease in leases:
            entry = self._running.get(lease) or self._checking.get(lease)
            if entry is not None:
                entry.renewed_at = max(entry.renewed_at, at)

    def expired(self, ttl: float) -> list[LeaseKey]:
        """Checks, and attempts not yet being killed, whose lease was not renewed for ``ttl`` s."""
        now = self._clock()
        checking = [
            lease for lease, entry in self._checking.items() if now - entry.renewed_at >= ttl
        ]
        return checking + [
            lease
            for lease, entry in self._running.items()
            if entry.reported and not entry.execution.killing and now - entry.renewed_at >= ttl
        ]

    async def wait_until(self, condition: Callable[[], bool], within: float | None) -> bool:
        """Waits up to ``within`` seconds (None: forever) for ``condition()``; False if late."""
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        while not condition():
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return condition()
        return True

    async def close(self) -> None:
        """Stops every check, waits until every process is gone (kill them first).

        Then removes the outputs directory: attempts started after this fail
        to start.
        """
        for task in self._check_tasks:
            if not task.cancelling():  # a second cancel would cut its cleanup short
                task.cancel()
        await asyncio.gather(*self._check_tasks, return_exceptions=True)
        while self._attempts:
            await asyncio.wait(set(self._attempts))
        self._outputs.close()

    # --- internals ------------------------------------------------------------

    async def _check(
        self, lease: LeaseKey, entry: _Checking, checks: Sequence[Check], *, at: float | None
    ) -> None:
        """Evaluates the checks (at ``at``); then tells the listener and starts the
        attempt, or forgets."""
        try:
            if at is not None:
                await asyncio.sleep(at - time.monotonic())
            verdicts = await evaluate_all(checks, self._check_turns, self._isolation)
        except Exception:  # a bug must not hold the slot forever
            log.exception("lease %s: evaluating preconditions failed; lease forgotten", lease)
            return
        finally:
            if self._checking.get(lease) is entry:
                del self._checking[lease]
                self._notify()
        ready = all(verdict.ready for verdict in verdicts)
        log.info("lease %s: preconditions %s", lease, _summary(verdicts))
        self._listener.preconditions_checked(lease, verdicts)
        if ready:
            self._start(lease, entry.spec, renewed_at=entry.renewed_at)

    def _stop_checking(self, lease: LeaseKey, reason: str) -> bool:
        """Cancels a lease's checks and forgets the lease; False if it was not being checked."""
        entry = self._checking.pop(lease, None)
        if entry is None:
            return False
        if entry.task is not None:
            entry.task.cancel()
        log.info("lease %s: preconditions no longer checked (%s)", lease, reason)
        self._notify()
        return True

    async def _attempt(self, lease: LeaseKey, entry: _Running, at: float | None) -> None:
        """Spawns the process (at ``at``) and announces it; waits for its end, reports it."""
        execution = entry.execution
        try:
            started = await execution.start(at=at)
            if started is not None and entry.reported:
                self._announce(lease, execution.spec, started)
            result = await execution.wait()
        except asyncio.CancelledError:
            if execution.started is None:  # cancelled while spawning: nothing was left running
                del self._running[lease]
                self._notify()
            raise
        except Exception as error:  # a bug must not leave the lease held forever
            log.exception("lease %s: supervising the attempt failed", lease)
            result = AttemptResult(
                outcome=AttemptOutcome.FAILED,
                argv=execution.spec.argv,
                started_at=execution.started.started_at if execution.started else None,
                finished_at=datetime.now(UTC),
                message=f"agent error: {error!r}",
            )
        self._end(lease, entry, result)

    def _announce(self, lease: LeaseKey, spec: AttemptSpec, started: Started) -> None:
        # Synchronously after Execution.start returned: before any output (see there).
        # At debug: the end's line says what ran (one line per attempt at info).
        log.debug(
            "lease %s: started %s attempt %d, pid %d: %s",
            lease,
            spec.task,
            spec.attempt,
            started.pid,
            " ".join(spec.argv),
        )
        self._listener.attempt_started(lease, spec.argv, started)
        self._notify()

    def _end(self, lease: LeaseKey, entry: _Running, result: AttemptResult) -> None:
        del self._running[lease]
        spawned = entry.execution.started is not None
        self._metrics.attempt_finished(result.outcome.value, spawned=spawned)
        if entry.reported:
            self._pending[lease] = result
            if log.isEnabledFor(logging.INFO):
                log.info("lease %s: %s", lease, _ended(entry.execution, result))
            self._listener.attempt_finished(lease, result)
        else:
            log.info("lease %s: revoked attempt ended (%s)", lease, result.outcome)
        self._notify()

    def _output(self, lease: LeaseKey, stream: OutputStream, data: bytes) -> bool:
        self._metrics.output(stream.value, len(data))
        entry = self._running.get(lease)
        if entry is not None and entry.reported:
            return self._listener.attempt_output(lease, stream, data)
        return False

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


def _monotonic_in(seconds: float) -> float | None:
    """``time.monotonic()`` ``seconds`` from now; None for "at once". (Not the loop's
    clock: uvloop's counts whole milliseconds.)"""
    return time.monotonic() + seconds if seconds > 0 else None


def _summary(verdicts: Sequence[PreconditionVerdict]) -> str:
    """``ready (2 checked)`` or ``not ready: #0 no such file: /x; #2 HTTP 503``."""
    failed = [f"#{verdict.index} {verdict.message}" for verdict in verdicts if not verdict.ready]
    if not failed:
        return f"ready ({len(verdicts)} checked)"
    return "not ready: " + "; ".join(failed)


def _ended(execution: Execution, result: AttemptResult) -> str:
    """One line on an attempt that ended: what ran, how it ended, after how long."""
    spec, started = execution.spec, execution.started
    ran = f"{spec.task} attempt {spec.attempt}"
    if started is not None:
        seconds = (result.finished_at - started.started_at).total_seconds()
        ran += f" (pid {started.pid}, {seconds:.3f}s)"
    ended = f"{ran} {result.outcome.value}"
    return f"{ended}: {result.message}" if result.message else ended
