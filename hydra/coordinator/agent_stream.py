"""The coordinator's side of an agent's stream (AgentService.Connect).

The agent says Hello; we reconcile the leases it still holds, answer Welcome,
then read its messages (heartbeats, attempt started/finished, output) while a
writer sends what the dispatcher queued for it. Every report goes through the
lease store, which checks the fencing token. Reports that arrive while
earlier ones are being recorded are recorded together, in one transaction,
and answered only once it has committed: a busy agent costs one commit per
batch, not one per message. Heartbeats go to the coordinator's
:class:`~hydra.coordinator.heartbeats.HeartbeatRecorder`, which records those of
all streams together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import grpc
import psycopg

from hydra.coordinator.heartbeats import HeartbeatRecorder, PendingHeartbeat
from hydra.coordinator.lease_batch import LeaseBatch
from hydra.coordinator.lease_store import DUPLICATE_SUCCESS, LeaseStore
from hydra.coordinator.loop import utcnow
from hydra.coordinator.records import (
    AttemptReport,
    AttemptStart,
    Heartbeat,
    LeaseTimes,
    ReportVerdict,
)
from hydra.coordinator.sessions import AgentSession, LeaseKey, SessionRegistry
from hydra.coordinator.store_base import CONFLICTS
from hydra.errors import Unavailable
from hydra.v1 import agent_service_pb2 as pb
from hydra.wire import from_timestamp, to_duration, verdict_from_proto

log = logging.getLogger("hydra.coordinator.agents")

#: Messages of one agent waiting to be handled; a full inbox stops reading its stream.
INBOX_SIZE = 1000
#: Messages handled in one transaction at most.
MAX_BATCH = 200
#: How many times one message is tried when its transactions keep being deadlock victims.
DEADLOCK_TRIES = 3


#: The kinds of message recorded in a report batch (heartbeats are recorded apart).
_RECORDED = frozenset(
    {"preconditions_checked", "lease_rejected", "attempt_started", "output", "attempt_finished"}
)

#: What to do once a message's changes are committed (answer the agent, wake the dispatcher).
Answer = Callable[[], None]

_OUTCOMES = {
    pb.ATTEMPT_OUTCOME_SUCCEEDED: "SUCCEEDED",
    pb.ATTEMPT_OUTCOME_FAILED: "FAILED",
    pb.ATTEMPT_OUTCOME_TIMED_OUT: "TIMED_OUT",
    pb.ATTEMPT_OUTCOME_CANCELLED: "CANCELLED",
    pb.ATTEMPT_OUTCOME_FENCED: "FENCED",
}


class AgentStreams:
    """Serves agent streams for one coordinator."""

    def __init__(
        self,
        *,
        store: LeaseStore,
        sessions: SessionRegistry,
        times: LeaseTimes,
        coordinator_id: str,
        output_limit: int,
    ) -> None:
        self._store = store
        self._sessions = sessions
        self._times = times
        self._coordinator_id = coordinator_id
        self._output_limit = output_limit
        self._heartbeats = HeartbeatRecorder(store, ttl=times.ttl, coordinator_id=coordinator_id)

    async def close(self) -> None:
        """Stops recording heartbeats (the server has stopped serving)."""
        await self._heartbeats.close()

    async def serve(
        self,
        requests: AsyncIterator[pb.AgentMessage],
        context: grpc.aio.ServicerContext[pb.AgentMessage, pb.CoordinatorMessage],
    ) -> AsyncIterator[pb.CoordinatorMessage]:
        """The Connect handler: Hello, Welcome, then messages both ways."""
        hello = await _read_hello(requests, context)
        session = AgentSession(
            agent_id=hello.agent_id,
            hostname=hello.hostname,
            labels=dict(hello.labels),
            capacity=hello.capacity,
            draining=hello.draining,
        )
        revoked = await self._greet(session, hello)
        yield pb.CoordinatorMessage(
            welcome=pb.Welcome(
                coordinator_id=self._coordinator_id,
                heartbeat_interval=to_duration(self._times.heartbeat_interval),
                lease_ttl=to_duration(self._times.ttl),
                revoked=[_ref(key) for key in revoked],
            )
        )
        self._sessions.open(session)
        reader = asyncio.create_task(
            self._read(session, requests), name=f"agent-{session.agent_id}"
        )
        try:
            while (message := await session.outbox.get()) is not None:
                yield session.outgoing(message)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await self._goodbye(session)

    async def _greet(self, session: AgentSession, hello: pb.Hello) -> set[LeaseKey]:
        held = [(lease.run_id, lease.lease_token) for lease in hello.held_leases]
        await self._store.connect_agent(
            agent_id=session.agent_id,
            hostname=session.hostname,
            labels=session.labels,
            capacity=session.capacity,
            version=hello.version,
            draining=session.draining,
            coordinator_id=self._coordinator_id,
        )
        revoked = await self._store.reconcile_agent(session.agent_id, held, self._times.ttl)
        session.held = set(held) - revoked
        log.info(
            "agent %s connected (%s, %d slots, labels %s, %d lease(s) held, %d revoked)",
            session.agent_id,
            session.hostname,
            session.capacity,
            dict(session.labels),
            len(session.held),
            len(revoked),
        )
        return revoked

    async def _goodbye(self, session: AgentSession) -> None:
        self._sessions.close(session)
        if self._sessions.get(session.agent_id) is None:
            with contextlib.suppress(Exception):
                await self._store.disconnect_agent(session.agent_id, self._coordinator_id)
        log.info("agent %s disconnected", session.agent_id)

    async def _read(self, session: AgentSession, requests: AsyncIterator[pb.AgentMessage]) -> None:
        """Reads the agent's messages into an inbox that `_work` empties in batches."""
        inbox: asyncio.Queue[pb.AgentMessage | None] = asyncio.Queue(INBOX_SIZE)
        worker = asyncio.create_task(self._work(session, inbox), name=f"reports-{session.agent_id}")
        try:
            async for message in requests:
                if worker.done():  # it failed, and closed the session
                    break
                if message.WhichOneof("body") == "heartbeat":
                    self._heartbeat(session, message.heartbeat)  # with other streams' heartbeats
                    continue
                await inbox.put(message)  # a full inbox slows the agent down (flow control)
            else:
                await inbox.put(None)
                await worker  # what the agent sent before it closed is still recorded
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("agent %s: stream failed", session.agent_id)
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker
            session.close()

    async def _work(
        self, session: AgentSession, inbox: asyncio.Queue[pb.AgentMessage | None]
    ) -> None:
        """Handles what waits in the inbox, all of it in one transaction, until the end."""
        while True:
            batch: list[pb.AgentMessage] = []
            message = await inbox.get()
            while message is not None:
                batch.append(message)
                if len(batch) >= MAX_BATCH or inbox.empty():
                    break
                message = inbox.get_nowait()
            try:
                await self._handle_batch(session, batch)
            except Exception:
                # Nothing was acknowledged: the agent re-sends its reports on a new stream.
                log.exception("agent %s: recording its messages failed", session.agent_id)
                session.close()
                return
            if message is None:
                return

    async def _handle_batch(self, session: AgentSession, batch: list[pb.AgentMessage]) -> None:
        """One transaction for the batch, then the answers; if the transaction fails
        for one message's sake, each message again in a transaction of its own.

        So does a batch that deadlocked with another transaction (a batch
        finishing several runs locks their dependents' task rows run by run,
        in an order another batch may cross); a single message that deadlocked
        is tried again, up to DEADLOCK_TRIES times in all.
        """
        if not batch:
            return
        try:
            async with self._store.batch() as leases:
                answers = await self._record(session, leases, batch)
        except Unavailable as error:
            if not isinstance(error.__cause__, CONFLICTS):
                raise
            log.info("agent %s: %d message(s) deadlocked; again", session.agent_id, len(batch))
            if len(batch) == 1:
                await self._handle_alone(session, batch[0], tries=DEADLOCK_TRIES - 1)
                return
            for message in batch:
                await self._handle_batch(session, [message])
            return
        except Exception:
            if len(batch) == 1:
                await self._handle_alone(session, batch[0])
                return
            for message in batch:
                await self._handle_batch(session, [message])
            return
        for answer in answers:
            answer()

    async def _handle_alone(
        self, session: AgentSession, message: pb.AgentMessage, *, tries: int = DEADLOCK_TRIES
    ) -> None:
        try:
            async with self._store.batch() as leases:
                answers = await self._record(session, leases, [message])
        except Unavailable as error:
            if tries <= 1 or not isinstance(error.__cause__, CONFLICTS):
                raise
            log.info("agent %s: a message deadlocked; again", session.agent_id)
            await self._handle_alone(session, message, tries=tries - 1)
            return
        except psycopg.errors.UniqueViolation:
            if message.WhichOneof("body") != "attempt_finished":
                raise
            # The one-success index: never two SUCCEEDED attempts for a run.
            verdict = ReportVerdict(accepted=False, reason=DUPLICATE_SUCCESS)
            answers = [self._finished_answer(session, message.attempt_finished, verdict)]
        for answer in answers:
            answer()

    async def _record(
        self, session: AgentSession, leases: LeaseBatch, batch: list[pb.AgentMessage]
    ) -> list[Answer]:
        """Records a batch kind by kind, in the order of one lease's messages (its
        check, start, output, end): one statement starts every attempt of the batch,
        one locks the runs of every attempt that ended. Returns what to do once the
        batch is committed."""
        by_kind: dict[str, list[pb.AgentMessage]] = {}
        for message in batch:
            by_kind.setdefault(message.WhichOneof("body") or "", []).append(message)
        for kind in by_kind.keys() - _RECORDED:
            log.warning("agent %s sent an unexpected %s", session.agent_id, kind or "message")
        answers: list[Answer | None] = []
        for message in by_kind.get("preconditions_checked", []):
            answers.append(await self._checked(session, leases, message.preconditions_checked))
        for message in by_kind.get("lease_rejected", []):
            answers.append(await self._rejected(session, leases, message.lease_rejected))
        if started := by_kind.get("attempt_started"):
            answers += await self._started(session, leases, [m.attempt_started for m in started])
        for message in by_kind.get("output", []):
            chunk = message.output
            await leases.append_output(
                chunk.lease.run_id,
                chunk.lease.lease_token,
                int(chunk.stream),
                chunk.data,
                limit=self._output_limit,
            )
        if finished := by_kind.get("attempt_finished"):
            answers += await self._finished(session, leases, [m.attempt_finished for m in finished])
        return [answer for answer in answers if answer is not None]

    def _heartbeat(self, session: AgentSession, heartbeat: pb.Heartbeat) -> None:
        """Queues the heartbeat with those of other streams; the ack follows the commit."""
        listed = tuple((lease.run_id, lease.lease_token) for lease in heartbeat.leases)
        if heartbeat.draining and not session.draining:
            log.info("agent %s is draining", session.agent_id)
        session.draining = session.draining or heartbeat.draining

        def renewed(current: set[LeaseKey]) -> None:
            revoked = [key for key in listed if key not in current]
            session.held.difference_update(revoked)
            if revoked:
                self._sessions.slots_changed.set()
            session.send(
                pb.CoordinatorMessage(
                    heartbeat_ack=pb.HeartbeatAck(
                        sequence=heartbeat.sequence, revoked=[_ref(key) for key in revoked]
                    )
                )
            )

        self._heartbeats.submit(
            PendingHeartbeat(
                heartbeat=Heartbeat(
                    agent_id=session.agent_id, leases=listed, draining=session.draining
                ),
                renewed=renewed,
                failed=session.close,  # the agent reconnects, to us or another coordinator
            )
        )

    async def _started(
        self, session: AgentSession, leases: LeaseBatch, started: list[pb.AttemptStarted]
    ) -> list[Answer]:
        starts = [
            AttemptStart(
                run_id=each.lease.run_id,
                lease_token=each.lease.lease_token,
                argv=tuple(each.argv),
                started_at=from_timestamp(each.started_at),
            )
            for each in started
        ]
        current = await leases.start_attempts(session.agent_id, starts)
        return [
            self._stale_start_answer(session, each)
            for each in started
            if (each.lease.run_id, each.lease.lease_token) not in current
        ]

    def _stale_start_answer(self, session: AgentSession, started: pb.AttemptStarted) -> Answer:
        key = (started.lease.run_id, started.lease.lease_token)

        def answer() -> None:
            log.warning(
                "agent %s started run %s under stale lease %d; cancelling it",
                session.agent_id,
                key[0],
                key[1],
            )
            session.held.discard(key)
            session.send(
                pb.CoordinatorMessage(
                    cancel=pb.CancelAttempt(
                        lease=started.lease, reason="the lease is no longer current"
                    )
                )
            )

        return answer

    async def _finished(
        self, session: AgentSession, leases: LeaseBatch, finished: list[pb.AttemptFinished]
    ) -> list[Answer]:
        for each in finished:
            # The slot is free already: this transaction may lease it again (inline dispatch).
            session.held.discard((each.lease.run_id, each.lease.lease_token))
        verdicts = await leases.finish_attempts([_report(session.agent_id, f) for f in finished])
        return [
            self._finished_answer(session, each, verdict)
            for each, verdict in zip(finished, verdicts, strict=True)
        ]

    def _finished_answer(
        self, session: AgentSession, finished: pb.AttemptFinished, verdict: ReportVerdict
    ) -> Answer:
        def answer() -> None:
            key = (finished.lease.run_id, finished.lease.lease_token)
            if not verdict.accepted:
                log.warning(
                    "refused report of agent %s on run %s (lease %d): %s",
                    session.agent_id,
                    key[0],
                    key[1],
                    verdict.reason,
                )
            session.held.discard(key)
            if not verdict.accepted:
                # An accepted report's transaction leased the freed slot again
                # already (inline dispatch); a refused one's did not.
                self._sessions.slots_changed.set()
            session.send(
                pb.CoordinatorMessage(
                    report_ack=pb.ReportAck(
                        lease=finished.lease, accepted=verdict.accepted, reason=verdict.reason
                    )
                )
            )

        return answer

    async def _checked(
        self, session: AgentSession, leases: LeaseBatch, checked: pb.PreconditionsChecked
    ) -> Answer | None:
        key = (checked.lease.run_id, checked.lease.lease_token)
        await leases.record_preconditions(
            key[0],
            key[1],
            ready=checked.ready,
            verdicts=[verdict_from_proto(v) for v in checked.verdicts],
            now=utcnow(),
        )
        if checked.ready:
            return None

        def answer() -> None:
            session.held.discard(key)  # the agent gave the lease up
            self._sessions.slots_changed.set()

        return answer

    async def _rejected(
        self, session: AgentSession, leases: LeaseBatch, rejected: pb.LeaseRejected
    ) -> Answer:
        key = (rejected.lease.run_id, rejected.lease.lease_token)
        log.info("agent %s rejected run %s: %s", session.agent_id, key[0], rejected.reason)
        await leases.release_lease(key[0], key[1], reason=f"agent rejected: {rejected.reason}")
        return lambda: session.held.discard(key)


async def _read_hello(
    requests: AsyncIterator[pb.AgentMessage],
    context: grpc.aio.ServicerContext[pb.AgentMessage, pb.CoordinatorMessage],
) -> pb.Hello:
    first = await anext(aiter(requests), None)
    if first is None or first.WhichOneof("body") != "hello":
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be hello")
    assert first is not None
    hello = first.hello
    if not hello.agent_id:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "hello.agent_id: required")
    if hello.capacity < 1:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "hello.capacity: at least 1")
    return hello


def _report(agent_id: str, finished: pb.AttemptFinished) -> AttemptReport:
    finished_at = from_timestamp(finished.finished_at)
    started_at = from_timestamp(finished.started_at) if finished.HasField("started_at") else None
    return AttemptReport(
        run_id=finished.lease.run_id,
        lease_token=finished.lease.lease_token,
        agent_id=agent_id,
        outcome=_OUTCOMES.get(finished.outcome, "FAILED"),
        argv=tuple(finished.argv),
        started_at=started_at or finished_at,
        finished_at=finished_at,
        exit_code=finished.exit_code if finished.HasField("exit_code") else None,
        signal=finished.signal if finished.HasField("signal") else None,
        message=finished.message,
        outputs_json=finished.outputs_json,
    )


def _ref(key: LeaseKey) -> pb.LeaseRef:
    return pb.LeaseRef(run_id=key[0], lease_token=key[1])
