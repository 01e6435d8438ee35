"""The leases an agent holds, across streams and reconnections.

A lease is held from the offer until the coordinator acknowledges the
attempt's report: while its process runs, then as a pending report. A revoked
lease is dropped at once; its process is still killed and waited for, but its
end is reported to nobody.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from hydra.agent.attempt import AttemptResult, AttemptSpec, LeaseKey, Outcome, OutputStream, Started
from hydra.agent.executor import Execution

log = logging.getLogger("hydra.agent")


class LeaseListener(Protocol):
    """Told what held attempts produce; the daemon relays it to the current stream."""

    def attempt_output(self, lease: LeaseKey, stream: OutputStream, data: bytes) -> None:
        """A batch of output of a held attempt."""

    def attempt_finished(self, lease: LeaseKey, result: AttemptResult) -> None:
        """A held attempt ended; its report is now pending."""


@dataclass(eq=False)
class _Running:
    execution: Execution
    #: time.monotonic() from which the lease is known to be valid for a TTL.
    renewed_at: float
    #: False once revoked: the end is then reported to nobody.
    reported: bool = True


class LeaseBook:
    """Running attempts and pending reports, keyed by lease."""

    def __init__(
        self, listener: LeaseListener, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._listener = listener
        self._clock = clock
        self._running: dict[LeaseKey, _Running] = {}
        self._pending: dict[LeaseKey, AttemptResult] = {}
        self._supervisors: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()

    # --- what is held ---------------------------------------------------------

    def held(self) -> list[LeaseKey]:
        """Every lease held: attempts running, then reports not yet acknowledged."""
        running = [lease for lease, entry in self._running.items() if entry.reported]
        return running + list(self._pending)

    def active(self) -> int:
        """Attempts running under a held lease: the slots in use."""
        return sum(1 for entry in self._running.values() if entry.reported)

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
        """Processes still running, revoked ones included."""
        return len(self._running)

    @property
    def idle(self) -> bool:
        """Nothing runs and nothing waits for an acknowledgement."""
        return not self._running and not self._pending

    # --- changes --------------------------------------------------------------

    async def start(self, lease: LeaseKey, spec: AttemptSpec) -> Started | None:
        """Spawns the attempt of a lease; None if it could not start.

        Either way the lease is held until its report is acknowledged. The
        report of a failed spawn reaches the listener after this returns.
        """
        execution = Execution(
            spec, on_output=lambda stream, data: self._output(lease, stream, data)
        )
        entry = _Running(execution, renewed_at=self._clock())
        self._running[lease] = entry  # held, and using a slot, while it spawns
        try:
            started = await execution.start()
        except asyncio.CancelledError:  # nothing was left running
            del self._running[lease]
            self._notify()
            raise
        supervisor = asyncio.create_task(self._supervise(lease, entry))
        self._supervisors.add(supervisor)
        supervisor.add_done_callback(self._supervisors.discard)
        if started:
            log.info("lease %s: started pid %d: %s", lease, started.pid, " ".join(spec.argv))
        self._notify()
        return started

    def kill(self, lease: LeaseKey, outcome: Outcome, message: str) -> bool:
        """Kills the attempt of a held lease; False if none runs."""
        execution = self.execution(lease)
        if execution is None:
            return False
        if not execution.killing:
            log.info("lease %s: killing (%s: %s)", lease, outcome, message)
        execution.kill(outcome, message)
        return True

    def kill_all(self, outcome: Outcome, message: str, *, immediately: bool = False) -> None:
        """Kills every process, revoked ones included."""
        for lease, entry in self._running.items():
            if not entry.execution.killing:
                log.info("lease %s: killing (%s: %s)", lease, outcome, message)
            entry.execution.kill(outcome, message, immediately=immediately)

    def revoke(self, lease: LeaseKey) -> None:
        """Forgets a lease that is no longer current, killing its process unreported."""
        entry = self._running.get(lease)
        if entry is not None and entry.reported:
            entry.reported = False
            entry.execution.kill(Outcome.CANCELLED, "lease revoked")
            log.warning("lease %s: revoked by the coordinator; killing its process", lease)
        elif self._pending.pop(lease, None) is not None:
            log.warning("lease %s: revoked by the coordinator; report dropped", lease)
        self._notify()

    def acknowledge(self, lease: LeaseKey) -> AttemptResult | None:
        """Forgets a report the coordinator answered; None if it was not pending."""
        result = self._pending.pop(lease, None)
        self._notify()
        return result

    def renew(self, leases: Iterable[LeaseKey], at: float) -> None:
        """Records that ``leases`` are valid for a TTL from ``at`` (monotonic)."""
        for lease in leases:
            entry = self._running.get(lease)
            if entry is not None:
                entry.renewed_at = max(entry.renewed_at, at)

    def expired(self, ttl: float) -> list[LeaseKey]:
        """Running attempts, not yet being killed, whose lease was not renewed for ``ttl`` s."""
        now = self._clock()
        return [
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
        """Waits until every process is gone (kill them first)."""
        if self._supervisors:
            await asyncio.wait(set(self._supervisors))

    # --- internals ------------------------------------------------------------

    async def _supervise(self, lease: LeaseKey, entry: _Running) -> None:
        try:
            result = await entry.execution.wait()
        except Exception as error:  # a bug must not leave the lease held forever
            log.exception("lease %s: supervising the attempt failed", lease)
            result = AttemptResult(
                outcome=Outcome.FAILED,
                argv=entry.execution.spec.argv,
                started_at=entry.execution.started.started_at if entry.execution.started else None,
                finished_at=datetime.now(UTC),
                message=f"agent error: {error!r}",
            )
        del self._running[lease]
        if entry.reported:
            self._pending[lease] = result
            log.info("lease %s: %s %s", lease, result.outcome, result.message or "")
            self._listener.attempt_finished(lease, result)
        else:
            log.info("lease %s: revoked attempt ended (%s)", lease, result.outcome)
        self._notify()

    def _output(self, lease: LeaseKey, stream: OutputStream, data: bytes) -> None:
        entry = self._running.get(lease)
        if entry is not None and entry.reported:
            self._listener.attempt_output(lease, stream, data)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
