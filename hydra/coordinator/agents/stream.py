"""The coordinator's side of an agent's stream (AgentService.Connect).

The agent says Hello; we reconcile the leases it still holds, answer Welcome,
then read its messages (heartbeats, attempt started/finished, output) while a
writer sends what the dispatcher queued for it. Every report goes through the
store, which checks the fencing token. Reports that arrive while
earlier ones are being recorded are recorded together, in one transaction,
whose freed slots the dispatcher leases again before it commits; each report is
answered only once it has committed: a busy agent costs one commit per
batch, not one per message. Heartbeats go to the coordinator's
:class:`~hydra.coordinator.loops.heartbeats.HeartbeatRecorder`, which records those of
all streams together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING

import grpc
import psycopg

from hydra.coordinator.agents import protocol
from hydra.coordinator.agents.identity import identity_problem
from hydra.coordinator.agents.sessions import AgentSession, SessionRegistry
from hydra.coordinator.api import caller
from hydra.coordinator.loops.heartbeats import HeartbeatRecorder, PendingHeartbeat
from hydra.coordinator.loops.timing import utcnow
from hydra.coordinator.store import CONFLICTS, Database, Transaction, agents, attempts, leases
from hydra.coordinator.store import preconditions as precondition_checks
from hydra.coordinator.store.records import Heartbeat, LeaseTimes, ReportVerdict
from hydra.domain import LeaseKey, agent_id_problem, output_budget
from hydra.errors import Unavailable
from hydra.stream_batches import BATCHES, NEWEST, OLDEST, Gatherer, negotiate
from hydra.v1 import agent_service_pb2 as pb
from hydra.wire import verdict_from_proto

if TYPE_CHECKING:
    from hydra.coordinator.loops.dispatcher import Dispatcher
    from hydra.coordinator.metrics import CoordinatorMetrics

log = logging.getLogger("hydra.coordinator.agents")

#: Messages of one agent waiting to be handled; a full inbox stops reading its stream.
INBOX_SIZE = 1000
#: Messages handled in one transaction at most.
MAX_BATCH = 200
#: How many times one message is tried when its transactions keep being deadlock victims.
DEADLOCK_TRIES = 3
#: Longest instance id an agent may send in its Hello.
MAX_INSTANCE_ID_CHARS = 128

#: The kinds of message recorded in a report batch (heartbeats are recorded apart).
_RECORDED = frozenset(
    {"preconditions_checked", "lease_rejected", "attempt_started", "output", "attempt_finished"}
)

#: What to do once a message's changes are committed (answer the agent, wake the dispatcher).
Answer = Callable[[], None]


class AgentStreams:
    """Serves agent streams for one coordinator."""

    def __init__(
        self,
        *,
        database: Database,
        dispatcher: Dispatcher,
        sessions: SessionRegistry,
        times: LeaseTimes,
        coordinator_id: str,
        output_limit: int,
        metrics: CoordinatorMetrics,
        protocol_version: int = NEWEST,
    ) -> None:
        """`protocol_version`: the newest agent protocol version to speak (tests set 1
        to stand for a coordinator older than batches)."""
        self._db = database
        self._protocol_version = protocol_version
        self._received = (
            metrics.child(metrics.stream_messages, ("received",)),
            metrics.child(metrics.stream_items, ("received",)),
        )
        self._sent = (
            metrics.child(metrics.stream_messages, ("sent",)),
            metrics.child(metrics.stream_items, ("sent",)),
        )
        self._dispatcher = dispatcher
        self._sessions = sessions
        self._times = times
        self._coordinator_id = coordinator_id
        self._output_limit = output_limit
        self._output_head = output_budget(output_limit).head
        self._heartbeats = HeartbeatRecorder(database, ttl=times.ttl, coordinator_id=coordinator_id)

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
        version = negotiate(
            (hello.min_protocol_version, hello.protocol_version),
            (OLDEST, self._protocol_version),
        )
        if isinstance(version, str):
            log.warning("refused agent %r: %s", hello.agent_id, version)
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"hello.min_protocol_version: {version}"
            )
        assert isinstance(version, int)
        connecting_as = caller.current()
        if (problem := identity_problem(connecting_as, hello)) is not None:
            log.warning("refused agent %r: %s", hello.agent_id, problem)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, problem)
        session = AgentSession(
            agent_id=hello.agent_id,
            instance_id=hello.instance_id,
            hostname=hello.hostname,
            labels=dict(hello.labels),
            capacity=hello.capacity,
            draining=hello.draining,
            output_limit=self._output_limit,
            credential=connecting_as.name if connecting_as.agent_id is not None else "",
            protocol_version=version,
        )
        try:
            revoked = await self._greet(session, hello)
        except agents.AgentIdInUse as error:
            log.warning("refused a second agent with id %s: %s", session.agent_id, error)
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, error.message)
        yield protocol.welcome(self._coordinator_id, self._times, revoked, protocol_version=version)
        self._sessions.open(session)
        reader = asyncio.create_task(
            self._read(session, requests), name=f"agent-{session.agent_id}"
        )
        outgoing = Gatherer(session.outbox, pb.CoordinatorMessage.ByteSize)
        batching = version >= BATCHES
        messages, items = self._sent
        try:
            while (taken := await outgoing.next(batching=batching)) is not None:
                messages.inc()
                items.inc(len(taken))
                yield protocol.batched([session.outgoing(message) for message in taken])
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await self._goodbye(session)
        if session.refusal is not None:
            await context.abort(*session.refusal)

    async def _greet(self, session: AgentSession, hello: pb.Hello) -> set[LeaseKey]:
        """Record the agent connected here and reconcile the leases it holds.

        Raises:
            AgentIdInUse: another instance of the agent (another process with its
                id) has a live session, here or on another coordinator; nothing
                was changed: its leases and its stream are left alone.
        """
        held = [protocol.lease_key(lease) for lease in hello.held_leases]
        current = self._sessions.get(session.agent_id)
        if (
            current is not None
            and current.instance_id != session.instance_id
            and current.live(self._times.ttl)
        ):
            raise agents.AgentIdInUse(session.agent_id, self._coordinator_id)
        async with self._db.transaction() as tx:
            await agents.connect(
                tx,
                agent_id=session.agent_id,
                instance_id=session.instance_id,
                hostname=session.hostname,
                labels=session.labels,
                capacity=session.capacity,
                version=hello.version,
                draining=session.draining,
                coordinator_id=self._coordinator_id,
                ttl=self._times.ttl,
            )
        revoked = await self._db.run(leases.reconcile, session.agent_id, held, self._times.ttl)
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
        # A heartbeat recorded after the disconnect would make the agent look connected.
        await self._heartbeats.withdraw(session)
        if self._sessions.get(session.agent_id) is None:
            with contextlib.suppress(Exception):
                await self._db.run(agents.disconnect, session.agent_id, self._coordinator_id)
        log.info("agent %s disconnected", session.agent_id)

    async def _read(self, session: AgentSession, requests: AsyncIterator[pb.AgentMessage]) -> None:
        """Reads the agent's messages into an inbox that `_work` empties in batches."""
        inbox: asyncio.Queue[pb.AgentMessage | None] = asyncio.Queue(INBOX_SIZE)
        worker = asyncio.create_task(self._work(session, inbox), name=f"reports-{session.agent_id}")
        try:
            messages, items = self._received
            async for message in requests:
                if worker.done():  # it failed, and closed the session
                    break
                session.heard()
                messages.inc()
                batched = message.HasField("batch")
                batch = message.batch.messages if batched else (message,)
                items.inc(len(batch))
                if batched and (problem := _batch_problem(batch)) is not None:
                    log.warning("agent %s: %s; ending its stream", session.agent_id, problem)
                    session.refusal = (grpc.StatusCode.INVALID_ARGUMENT, problem)
                    break
                for item in batch:
                    await self._take(session, inbox, item)
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

    async def _take(
        self,
        session: AgentSession,
        inbox: asyncio.Queue[pb.AgentMessage | None],
        message: pb.AgentMessage,
    ) -> None:
        """One item from the agent: a heartbeat joins other streams' heartbeats; the
        rest waits in the inbox (a full inbox slows the agent down: flow control)."""
        if message.HasField("heartbeat"):
            self._heartbeat(session, message.heartbeat)
        else:
            await inbox.put(message)

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

        So does a batch that deadlocked with another transaction (runs and their
        dependents' task rows are locked in id order, but a batch's rows and a
        trigger round's or a cancel's may still cross); a single message that
        deadlocked is tried again, up to DEADLOCK_TRIES times in all.
        """
        if not batch:
            return
        try:
            answers = await self._record_and_dispatch(session, batch)
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
            answers = await self._record_and_dispatch(session, [message])
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
            verdict = ReportVerdict(accepted=False, reason=attempts.DUPLICATE_SUCCESS)
            answers = [self._finished_answer(session, message.attempt_finished, verdict)]
        for answer in answers:
            answer()

    async def _record_and_dispatch(
        self, session: AgentSession, batch: list[pb.AgentMessage]
    ) -> list[Answer]:
        """Records the batch in one transaction, in which the dispatcher leases the
        slots it freed; the offers leave after the commit, then the answers."""
        async with self._db.transaction() as tx:
            answers = await self._record(session, tx, batch)
            await self._dispatcher.lease_available(tx)
        return answers

    async def _record(
        self, session: AgentSession, tx: Transaction, batch: list[pb.AgentMessage]
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
            answers.append(await self._checked(session, tx, message.preconditions_checked))
        for message in by_kind.get("lease_rejected", []):
            answers.append(await self._rejected(session, tx, message.lease_rejected))
        if started := by_kind.get("attempt_started"):
            answers += await self._started(session, tx, [m.attempt_started for m in started])
        for message in by_kind.get("output", []):
            chunk = message.output
            await attempts.append_output(
                tx,
                chunk.lease.run_id,
                chunk.lease.lease_token,
                int(chunk.stream),
                chunk.data,
                limit=self._output_head,
            )
        if finished := by_kind.get("attempt_finished"):
            answers += await self._finished(session, tx, [m.attempt_finished for m in finished])
        return [answer for answer in answers if answer is not None]

    def _heartbeat(self, session: AgentSession, heartbeat: pb.Heartbeat) -> None:
        """Queues the heartbeat with those of other streams; the ack follows the commit."""
        listed = tuple(protocol.lease_key(lease) for lease in heartbeat.leases)
        if heartbeat.draining and not session.draining:
            log.info("agent %s is draining", session.agent_id)
        session.draining = session.draining or heartbeat.draining

        def renewed(current: set[LeaseKey]) -> None:
            revoked = [key for key in listed if key not in current]
            session.ack_heartbeat(heartbeat.sequence, revoked)
            if revoked:
                self._sessions.slots_changed.set()

        self._heartbeats.submit(
            PendingHeartbeat(
                heartbeat=Heartbeat(
                    agent_id=session.agent_id, leases=listed, draining=session.draining
                ),
                renewed=renewed,
                failed=session.close,  # the agent reconnects, to us or another coordinator
                owner=session,
            )
        )

    async def _started(
        self, session: AgentSession, tx: Transaction, started: list[pb.AttemptStarted]
    ) -> list[Answer]:
        current = await attempts.start(
            tx, session.agent_id, [protocol.start_from_proto(each) for each in started]
        )
        return [
            self._stale_start_answer(session, key)
            for key in (protocol.lease_key(each.lease) for each in started)
            if key not in current
        ]

    def _stale_start_answer(self, session: AgentSession, key: LeaseKey) -> Answer:
        def answer() -> None:
            log.warning(
                "agent %s started run %s under stale lease %d; cancelling it",
                session.agent_id,
                key[0],
                key[1],
            )
            session.cancel(key, "the lease is no longer current")

        return answer

    async def _finished(
        self, session: AgentSession, tx: Transaction, finished: list[pb.AttemptFinished]
    ) -> list[Answer]:
        for each in finished:
            # The slot is free already: this transaction may lease it again (inline dispatch).
            session.held.discard(protocol.lease_key(each.lease))
        verdicts = await attempts.finish(
            tx, [protocol.report_from_proto(session.agent_id, f) for f in finished]
        )
        return [
            self._finished_answer(session, each, verdict)
            for each, verdict in zip(finished, verdicts, strict=True)
        ]

    def _finished_answer(
        self, session: AgentSession, finished: pb.AttemptFinished, verdict: ReportVerdict
    ) -> Answer:
        def answer() -> None:
            key = protocol.lease_key(finished.lease)
            if not verdict.accepted:
                log.warning(
                    "refused report of agent %s on run %s (lease %d): %s",
                    session.agent_id,
                    key[0],
                    key[1],
                    verdict.reason,
                )
                # An accepted report's transaction leased the freed slot again
                # already (inline dispatch); a refused one's did not.
                self._sessions.slots_changed.set()
            session.ack_report(key, verdict)

        return answer

    async def _checked(
        self, session: AgentSession, tx: Transaction, checked: pb.PreconditionsChecked
    ) -> Answer | None:
        key = protocol.lease_key(checked.lease)
        await precondition_checks.record(
            tx,
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
        self, session: AgentSession, tx: Transaction, rejected: pb.LeaseRejected
    ) -> Answer:
        key = protocol.lease_key(rejected.lease)
        log.info("agent %s rejected run %s: %s", session.agent_id, key[0], rejected.reason)
        await leases.release(tx, key[0], key[1], reason=f"agent rejected: {rejected.reason}")
        return lambda: session.held.discard(key)


def _batch_problem(batch: Sequence[pb.AgentMessage]) -> str | None:
    """What makes a received batch invalid, naming the item, or None."""
    for index, item in enumerate(batch):
        kind = item.WhichOneof("body")
        if kind is None:
            return f"batch.messages[{index}]: empty (no body)"
        if kind in ("hello", "batch"):
            return f"batch.messages[{index}]: a batch cannot hold a {kind}"
    return None


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
    if (problem := agent_id_problem(hello.agent_id)) is not None:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"hello.agent_id: {problem}")
    if len(hello.instance_id) > MAX_INSTANCE_ID_CHARS:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"hello.instance_id: at most {MAX_INSTANCE_ID_CHARS} characters",
        )
    if hello.capacity < 1:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "hello.capacity: at least 1")
    return hello
