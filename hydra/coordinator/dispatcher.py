"""The dispatcher: leases due, queued runs to this coordinator's agents.

It claims runs in batches up to each agent's free slots with `FOR UPDATE SKIP
LOCKED`, so coordinators never hand out the same run twice. It wakes on
`hydra_dispatch` notifications, on freed slots, and at the next `not_before`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace

from hydra.coordinator.lease_store import LEASE_AHEAD, LeaseStore
from hydra.coordinator.loop import seconds_until, utcnow, wait_event
from hydra.coordinator.records import AttemptReport, ClaimedRun, LeaseTimes
from hydra.coordinator.sessions import AgentSession, SessionRegistry
from hydra.coordinator.store_base import Cursor, Leased
from hydra.coordinator.templates import (
    RenderContext,
    Rendered,
    RenderError,
    render_command,
    render_string,
)
from hydra.domain import CommandCheck, FileCheck, HttpCheck, Precondition, TaskSpec
from hydra.v1 import agent_service_pb2 as pb
from hydra.wire import precondition_to_proto, to_duration, to_timestamp

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

    def __init__(self, store: LeaseStore, sessions: SessionRegistry, times: LeaseTimes) -> None:
        self._store = store
        self._sessions = sessions
        self._times = times
        self._refresh: asyncio.TimerHandle | None = None

    def wake(self) -> None:
        """Ask for a dispatch round soon (from notifications and freed slots)."""
        self._sessions.slots_changed.set()

    def refresh_timer(self) -> None:
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

    async def step(self) -> None:
        """One round: fill free slots; sleep until there may be more work."""
        more = await self.dispatch_once()
        if more:
            return
        if next(self._sessions.with_free_slots(), None) is None:
            # Only freed slots matter now; they set the event.
            await wait_event(self._sessions.slots_changed, FALLBACK_POLL_SECONDS)
            return
        next_due = await self._store.next_queued_due()
        claimable = None if next_due is None else next_due - LEASE_AHEAD
        await wait_event(
            self._sessions.slots_changed, seconds_until(claimable, cap=FALLBACK_POLL_SECONDS)
        )

    async def dispatch_once(self) -> bool:
        """Offer work to every agent with free slots. True if some agent got a full batch."""
        full_batch = False
        sessions = list(self._sessions.with_free_slots())
        if len(sessions) >= ASK_FIRST_FROM and not await self._store.runs_due():
            return False
        for session in sessions:
            free = session.free_slots
            session.reserved += free
            try:
                claimed = await self._store.claim_runs(
                    session.agent_id, session.labels, free, self._times.ttl
                )
            finally:
                session.reserved -= free
            for run in claimed:
                await self._offer(session, run)
            full_batch = full_batch or (len(claimed) == free and free > 0)
        return full_batch

    async def dispatch_inline(self, cur: Cursor) -> Leased | None:
        """Within a transaction that made work available, lease it to the agents with
        free slots (the store calls this before committing); offered after the commit."""
        sessions = list(self._sessions.with_free_slots())
        if len(sessions) >= ASK_FIRST_FROM and not await self._store.runs_due_in(cur):
            return None
        leased = _Leased(self)
        for session in sessions:
            free = session.free_slots
            session.reserved += free
            leased.reserved.append((session, free))
            runs = await self._store.claim_in(
                cur, session.agent_id, session.labels, free, self._times.ttl
            )
            leased.runs.extend((session, run) for run in runs)
            leased.slots_left = leased.slots_left or len(runs) < free
        return leased if leased.reserved else None

    async def _offer(self, session: AgentSession, run: ClaimedRun) -> None:
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
            rendered = render_command(run.task_spec, context)
            checks = render_preconditions(run.task_spec, context)
        except RenderError as error:
            await self._fail_unrendered(session, run, str(error))
            return
        session.held.add((run.run_id, run.lease_token))
        log.info(
            "lease %s: run %s (%s attempt %d) -> agent %s",
            run.lease_token,
            run.run_id,
            run.task_name,
            run.attempt,
            session.agent_id,
        )
        offer = _offer_message(run, rendered, self._times)
        offer.preconditions.extend(precondition_to_proto(check) for check in checks)
        session.send_offer(offer, run.not_before)

    async def _fail_unrendered(self, session: AgentSession, run: ClaimedRun, message: str) -> None:
        now = utcnow()
        log.warning("run %s: cannot render its command: %s", run.run_id, message)
        await self._store.finish_attempt(
            AttemptReport(
                run_id=run.run_id,
                lease_token=run.lease_token,
                agent_id=session.agent_id,
                outcome="FAILED",
                argv=(),
                started_at=now,
                finished_at=now,
                message=f"cannot render the command: {message}",
            )
        )


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
        # must not make it look failed. The lease then expires and the run
        # is offered again.
        self.aborted()
        for session, run in self.runs:
            try:
                await self.dispatcher._offer(session, run)
            except Exception:
                log.exception("run %s: offering lease %d failed", run.run_id, run.lease_token)
        if self.slots_left:
            self.dispatcher.refresh_timer()

    def aborted(self) -> None:
        for session, free in self.reserved:
            session.reserved -= free
        self.reserved.clear()


def _offer_message(run: ClaimedRun, rendered: Rendered, times: LeaseTimes) -> pb.LeaseOffer:
    offer = pb.LeaseOffer(
        lease=pb.LeaseRef(run_id=run.run_id, lease_token=run.lease_token),
        task=run.task_name,
        attempt=run.attempt,
        argv=list(rendered.argv),
        env=dict(rendered.env),
        workdir=rendered.workdir,
        kill_grace=to_duration(times.kill_grace),
        occurrence=to_timestamp(run.occurrence),
    )
    if run.task_spec.timeout is not None:
        offer.timeout.CopyFrom(to_duration(run.task_spec.timeout))
    return offer


def render_preconditions(spec: TaskSpec, context: RenderContext) -> list[Precondition]:
    """The spec's preconditions with their templated fields rendered for one run."""
    return [
        _render_check(check, context, f"preconditions[{i}]")
        for i, check in enumerate(spec.preconditions)
    ]


def _render_check(check: Precondition, context: RenderContext, path: str) -> Precondition:
    match check:
        case CommandCheck():
            argv = tuple(
                render_string(arg, context, f"{path}.command[{i}]")
                for i, arg in enumerate(check.argv)
            )
            return replace(check, argv=argv)
        case FileCheck():
            return replace(check, path=render_string(check.path, context, f"{path}.file"))
        case HttpCheck():
            return replace(check, url=render_string(check.url, context, f"{path}.http"))
        case _:
            return check
