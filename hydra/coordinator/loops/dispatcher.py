"""The dispatcher: leases due, queued runs to this coordinator's agents.

It claims runs in batches up to each agent's free slots with `FOR UPDATE SKIP
LOCKED`, so coordinators never hand out the same run twice. Work is leased
where it is made available: a Trigger, a trigger-loop tick, a finished attempt,
a retry or a reaped lease call :meth:`Dispatcher.lease_available` in their own
transaction, and its offers leave once that commits. The dispatcher's loop
covers the rest (new agents, other coordinators' work, runs due later): it
wakes on `hydra_dispatch` notifications, on freed slots, and at the next
`not_before`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from hydra.coordinator.agents.sessions import AgentSession, OfferTooLarge, SessionRegistry
from hydra.coordinator.loops.timing import seconds_until, utcnow, wait_event
from hydra.coordinator.rendering import RenderingUnavailable, RenderPool
from hydra.coordinator.store import Database, Transaction, attempts, leases
from hydra.coordinator.store.records import LEASE_AHEAD, AttemptReport, ClaimedRun, LeaseTimes
from hydra.coordinator.templates import RenderContext, RenderError
from hydra.domain import AttemptOutcome

log = logging.getLogger("hydra.coordinator.dispatcher")

#: Upper bound of the dispatcher's sleep when nothing wakes it.
FALLBACK_POLL_SECONDS = 5.0
#: With this many agents to claim for, one statement first asks whether any run
#: is due at all: many idle agents then cost one query a round, not a claim each.
ASK_FIRST_FROM = 4
#: How long after an inline dispatch that left slots free the dispatcher looks
#: again (see `_Leased.committed`).
TIMER_REFRESH_DELAY_SECONDS = 0.01


class Dispatcher:
    """Hands queued runs to connected agents."""

    def __init__(
        self,
        database: Database,
        sessions: SessionRegistry,
        times: LeaseTimes,
        *,
        renderer: RenderPool,
    ) -> None:
        self._db = database
        self._sessions = sessions
        self._times = times
        self._renderer = renderer
        self._refresh: asyncio.TimerHandle | None = None

    def wake(self) -> None:
        """Ask for a dispatch round soon (from notifications and freed slots)."""
        self._sessions.slots_changed.set()

    async def lease_available(self, tx: Transaction) -> None:
        """Lease what this transaction made available to this coordinator's agents with
        free slots, in it (so the change and its leases commit together); the runs are
        offered once it commits. Does nothing if the transaction made nothing available."""
        if not tx.made_work_available:
            return
        sessions = list(self._sessions.with_free_slots())
        if len(sessions) >= ASK_FIRST_FROM and not await leases.runs_due(tx):
            return
        leased = _Leased(self)
        for session in sessions:
            free = session.free_slots
            session.reserved += free
            leased.reserved.append((session, free))
            runs = await leases.claim(tx, session.agent_id, session.labels, free, self._times.ttl)
            leased.runs.extend((session, run) for run in runs)
            leased.slots_left = leased.slots_left or len(runs) < free
        if leased.reserved:
            tx.dispatched = True
            tx.after_commit(leased.committed)
            tx.after_rollback(leased.release)

    async def step(self) -> None:
        """One round: fill free slots; sleep until there may be more work."""
        more = await self.dispatch_once()
        if more:
            return
        if next(self._sessions.with_free_slots(), None) is None:
            # Only freed slots matter now; they set the event.
            await wait_event(self._sessions.slots_changed, FALLBACK_POLL_SECONDS)
            return
        next_due = await self._db.run(leases.next_queued_due)
        claimable = None if next_due is None else next_due - LEASE_AHEAD
        await wait_event(
            self._sessions.slots_changed, seconds_until(claimable, cap=FALLBACK_POLL_SECONDS)
        )

    async def dispatch_once(self) -> bool:
        """Offer work to every agent with free slots. True if some agent got a full batch."""
        full_batch = False
        sessions = list(self._sessions.with_free_slots())
        if len(sessions) >= ASK_FIRST_FROM and not await self._db.run(leases.runs_due):
            return False
        offers: list[asyncio.Task[None]] = []
        try:
            for session in sessions:
                free = session.free_slots
                session.reserved += free
                try:
                    claimed = await self._db.run(
                        leases.claim, session.agent_id, session.labels, free, self._times.ttl
                    )
                    offers += self.start_offers((session, run) for run in claimed)
                finally:
                    session.reserved -= free
                full_batch = full_batch or (len(claimed) == free and free > 0)
        except asyncio.CancelledError:
            for offer in offers:  # stopping: their leases expire
                offer.cancel()
            raise
        finally:
            await asyncio.gather(*offers, return_exceptions=True)
        return full_batch

    def start_offers(
        self, leased: Iterable[tuple[AgentSession, ClaimedRun]]
    ) -> list[asyncio.Task[None]]:
        """Render and offer leased runs concurrently, those of one task in order; each
        holds a slot of its agent (reserved here, at once) until it is offered."""
        by_task: dict[str, list[tuple[AgentSession, ClaimedRun]]] = {}
        for session, run in leased:
            session.reserved += 1
            by_task.setdefault(run.task_name, []).append((session, run))
        return [asyncio.create_task(self._offer_in_order(group)) for group in by_task.values()]

    async def _offer_in_order(self, pending: list[tuple[AgentSession, ClaimedRun]]) -> None:
        try:
            while pending:
                session, run = pending[0]
                try:
                    await self.offer(session, run)
                except Exception:
                    # The lease then expires and the run is offered again.
                    log.exception("run %s: offering lease %d failed", run.run_id, run.lease_token)
                finally:
                    pending.pop(0)
                    session.reserved -= 1
        finally:
            for session, _ in pending:  # cancelled: give back the slots not offered
                session.reserved -= 1

    async def offer(self, session: AgentSession, run: ClaimedRun) -> None:
        """Render a leased run's command and preconditions and offer it to the agent;
        a run that cannot be rendered (an error, a limit), or whose offer is too large
        to send, fails that attempt. The event loop serves others while a worker renders."""
        context = RenderContext(
            task_name=run.task_name,
            occurrence=run.occurrence,
            timezone=run.timezone,
            params=run.params,
            run_id=run.run_id,
            attempt=run.attempt,
            upstream=run.upstream,
        )
        try:
            rendered = await self._renderer.render(run.task_spec, context)
        except RenderError as error:
            await self._fail_unrendered(session, run, f"cannot render the command: {error}")
            return
        except RenderingUnavailable as error:
            log.warning("run %s: not offered (%s); its lease expires", run.run_id, error)
            return
        try:
            session.offer(run, rendered.command, rendered.preconditions, self._times)
        except OfferTooLarge as error:
            await self._fail_unrendered(session, run, f"cannot offer the attempt: {error}")
            return
        log.debug(  # the agent logs each attempt's end; the database has the record
            "lease %s: run %s (%s attempt %d) -> agent %s",
            run.lease_token,
            run.run_id,
            run.task_name,
            run.attempt,
            session.agent_id,
        )

    def _refresh_timer(self) -> None:
        """Ask for a round shortly, to learn when work queued for later becomes due.

        Not urgent: the round would only compete with the offers and answers
        that just left; work queued for later is due no sooner than this.
        """
        if self._refresh is None:
            loop = asyncio.get_running_loop()
            self._refresh = loop.call_later(TIMER_REFRESH_DELAY_SECONDS, self._refreshed)

    def _refreshed(self) -> None:
        self._refresh = None
        self.wake()

    async def _fail_unrendered(self, session: AgentSession, run: ClaimedRun, message: str) -> None:
        """Fail the attempt of a lease that never reached the agent, saying why."""
        now = utcnow()
        log.warning("run %s: %s", run.run_id, message)
        report = AttemptReport(
            run_id=run.run_id,
            lease_token=run.lease_token,
            agent_id=session.agent_id,
            outcome=AttemptOutcome.FAILED,
            argv=(),
            started_at=now,
            finished_at=now,
            message=message,
        )
        await attempts.finish_alone(self._db, report)


@dataclass(eq=False)
class _Leased:
    """Runs leased inside a transaction; offered once it commits."""

    dispatcher: Dispatcher
    reserved: list[tuple[AgentSession, int]] = field(default_factory=list)
    runs: list[tuple[AgentSession, ClaimedRun]] = field(default_factory=list)
    #: Some slot found nothing due: work the transaction queued for later (a
    #: retry's backoff) needs the dispatcher's timer.
    slots_left: bool = False

    async def committed(self) -> None:
        # The work that leased these runs is committed: an offer that fails
        # must not make it look failed (start_offers logs it).
        offers = self.dispatcher.start_offers(self.runs)  # their slots, before the release
        self.release()
        await asyncio.gather(*offers)
        if self.slots_left:
            self.dispatcher._refresh_timer()

    def release(self) -> None:
        """Give the reserved slots back (they are held by the offers from now on)."""
        for session, free in self.reserved:
            session.reserved -= free
        self.reserved.clear()
