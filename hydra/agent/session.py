"""One ``AgentService.Connect`` stream to one coordinator.

A session says Hello, takes the Welcome's terms, re-sends pending reports,
then runs two tasks until the stream ends: one reads coordinator messages,
one sends heartbeats. Outgoing messages go through an :class:`Outbox` that
the request iterator drains. The leases themselves outlive the session: they
are in the :class:`~hydra.agent.leases.LeaseBook`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
import grpc.aio

from hydra import __version__, stream_batches
from hydra.agent import messages
from hydra.agent.attempt import AttemptResult, OutputStream, Started
from hydra.agent.leases import LeaseBook
from hydra.agent.token_file import TokenFileError, read_token_file
from hydra.domain import AttemptOutcome, LeaseKey, PreconditionVerdict
from hydra.errors import InvalidArgument
from hydra.limits import message_size_options
from hydra.stream_batches import Gatherer
from hydra.v1 import agent_service_pb2 as pb
from hydra.v1.agent_service_pb2_grpc import AgentServiceStub

if TYPE_CHECKING:
    from hydra.agent.daemon import AgentConfig

log = logging.getLogger("hydra.agent")

#: How long a coordinator has to answer Hello.
WELCOME_TIMEOUT_SECONDS = 10.0
#: Output waiting to be sent beyond this is dropped rather than buffered (the
#: attempt then streams no more of it; its end carries the tail).
MAX_QUEUED_OUTPUT_BYTES = 4 * 1024 * 1024


class StreamLost(grpc.RpcError):
    """The stream stopped working without a gRPC error of its own.

    It travels as UNAVAILABLE so that the one retry policy reconnects.
    """

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self._details = details

    def code(self) -> grpc.StatusCode:
        """Always UNAVAILABLE."""
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        """What went wrong."""
        return self._details


class SessionEnd(enum.Enum):
    """Why a session ended without an error."""

    #: The agent closed the stream (drained, or stopping).
    CLOSED = "closed"
    #: The coordinator is shutting down: reconnect to another one at once.
    RELOCATE = "relocate"


@dataclass(eq=False, kw_only=True)
class AgentState:
    """What the daemon shares with its current session."""

    config: AgentConfig
    book: LeaseBook
    #: Starts the agent's drain (the coordinator sent Drain).
    request_drain: Callable[[str], None]
    draining: bool = False
    #: Seconds, from the last Welcome; None before the first.
    lease_ttl: float | None = None
    #: Sent in every Hello: tells this process from another one with the same agent id.
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: The credential last read from ``--token-file``: used when the file cannot be read.
    last_token: str | None = None

    def token(self) -> str | None:
        """The credential to connect with: ``--token-file`` read now, else ``HYDRA_TOKEN``."""
        path = self.config.token_file
        if path is None:
            return self.config.token
        try:
            self.last_token = read_token_file(path)
        except TokenFileError as error:
            log.error("%s; connecting with the credential read before", error)
        return self.last_token


class Outbox:
    """Messages for the stream, in order; output beyond a budget is dropped."""

    def __init__(self, max_output_bytes: int = MAX_QUEUED_OUTPUT_BYTES) -> None:
        self._queue: asyncio.Queue[pb.AgentMessage | None] = asyncio.Queue()
        self._max_output_bytes = max_output_bytes
        self._output_bytes = 0
        #: Send what is queued in batches (the stream speaks agent protocol 2).
        self.batching = False

    def put(self, message: pb.AgentMessage) -> None:
        """Queues a message."""
        self._queue.put_nowait(message)

    def put_output(self, message: pb.AgentMessage) -> bool:
        """Queues an OutputChunk unless too much output waits already; False if dropped."""
        size = len(message.output.data)
        if self._output_bytes + size > self._max_output_bytes:
            return False
        self._output_bytes += size
        self._queue.put_nowait(message)
        return True

    def close(self) -> None:
        """Ends the stream from the agent's side once everything queued is sent."""
        self._queue.put_nowait(None)

    async def messages(self, first: pb.AgentMessage) -> AsyncIterator[pb.AgentMessage]:
        """The request iterator: ``first``, then what is queued, until closed."""
        yield first
        gatherer = Gatherer(self._queue, pb.AgentMessage.ByteSize)
        try:
            while (taken := await gatherer.next(batching=self.batching)) is not None:
                for message in taken:
                    if message.WhichOneof("body") == "output":
                        self._output_bytes -= len(message.output.data)
                yield messages.batched(taken)
        except asyncio.CancelledError:
            # The stream is closing. Ending quietly spares the log the traceback
            # grpc prints for a request iterator that raises.
            return


class Session:
    """One stream to ``target``; :meth:`run` until it ends."""

    def __init__(self, target: str, state: AgentState) -> None:
        self.target = target
        self._state = state
        self._config = state.config
        self._book = state.book
        self._outbox = Outbox()
        self._wake_heartbeat = asyncio.Event()
        self._sent_heartbeats: dict[int, tuple[float, list[LeaseKey]]] = {}
        self._sequence = 0
        self._last_ack = time.monotonic()
        self._closing = False
        self._dropped_output: set[LeaseKey] = set()
        #: Welcomed and pending reports re-sent: live events may be sent.
        self.ready = False
        #: A heartbeat was acknowledged: the coordinator works end to end.
        self.healthy = False

    async def run(self) -> SessionEnd:
        """Runs the stream until it ends; raises ``grpc.RpcError`` when it breaks."""
        # The coordinator's message limit, both ways (hydra.limits).
        async with self._channel() as channel:
            call = AgentServiceStub(channel).Connect(
                self._outbox.messages(self._hello()), metadata=self._metadata()
            )
            terms = await self._welcome(call)
            reader = asyncio.create_task(self._read(call))
            heartbeats = asyncio.create_task(self._heartbeat(terms))
            try:
                done, _ = await asyncio.wait(
                    {reader, heartbeats}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                reader.cancel()
                heartbeats.cancel()
                await asyncio.gather(reader, heartbeats, return_exceptions=True)
            if reader in done:
                return reader.result()
            heartbeats.result()  # raises StreamLost
            raise StreamLost("heartbeats stopped")

    def _channel(self) -> grpc.aio.Channel:
        """A channel to the target; TLS files are read now, so rotated ones are used."""
        # The coordinator's message limit, both ways (hydra.limits).
        options: list[tuple[str, str | int]] = [*message_size_options()]
        tls = self._config.tls
        if tls is None:
            return grpc.aio.insecure_channel(self.target, options=options)
        options += tls.channel_options()
        try:
            credentials = tls.credentials()
        except InvalidArgument as error:  # say, mid-rotation: retried like a lost stream
            raise StreamLost(f"TLS files: {error}") from None
        return grpc.aio.secure_channel(self.target, credentials, options=options)

    def close(self) -> None:
        """Ends the stream from the agent's side after what is queued."""
        self._closing = True
        self._outbox.close()

    def heartbeat_now(self) -> None:
        """Sends a heartbeat without waiting for the interval (e.g. to say "draining")."""
        self._wake_heartbeat.set()

    def send_output(self, lease: LeaseKey, stream: OutputStream, data: bytes) -> bool:
        """Sends a batch of output; False (dropped) if the stream is backed up."""
        if self._outbox.put_output(messages.output_chunk(lease, stream, data)):
            return True
        if lease not in self._dropped_output:
            log.info(
                "lease %s: the stream is backed up: the rest of the output goes with its end", lease
            )
        self._dropped_output.add(lease)
        return False

    def send_report(self, lease: LeaseKey, result: AttemptResult) -> None:
        """Sends an attempt's end."""
        self._outbox.put(messages.attempt_finished(lease, result))

    def send_started(self, lease: LeaseKey, argv: Sequence[str], started: Started) -> None:
        """Announces an attempt's process."""
        self._outbox.put(messages.attempt_started(lease, argv, started))

    def send_verdicts(self, lease: LeaseKey, verdicts: Sequence[PreconditionVerdict]) -> None:
        """Sends the verdicts on a lease's preconditions."""
        self._outbox.put(messages.preconditions_checked(lease, verdicts))

    def send_rejection(self, lease: LeaseKey, reason: str) -> None:
        """Gives a lease back before anything started under it."""
        log.info("lease %s: rejected: %s", lease, reason)
        self._outbox.put(messages.lease_rejected(lease, reason))

    # --- opening --------------------------------------------------------------

    def _hello(self) -> pb.AgentMessage:
        config = self._config
        return messages.hello(
            agent_id=config.agent_id,
            instance_id=self._state.instance_id,
            hostname=config.hostname,
            labels=config.labels,
            capacity=config.capacity,
            version=__version__,
            held_leases=self._book.held(),
            draining=self._state.draining,
        )

    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        token = self._state.token()
        return (("authorization", f"Bearer {token}"),) if token else None

    async def _welcome(
        self, call: grpc.aio.StreamStreamCall[pb.AgentMessage, pb.CoordinatorMessage]
    ) -> messages.Terms:
        try:
            message = await asyncio.wait_for(call.read(), WELCOME_TIMEOUT_SECONDS)
        except TimeoutError:
            raise StreamLost(f"no Welcome within {WELCOME_TIMEOUT_SECONDS:g}s") from None
        if not isinstance(message, pb.CoordinatorMessage) or not message.HasField("welcome"):
            raise StreamLost("the coordinator did not answer Hello with Welcome")
        terms = messages.terms(message.welcome)
        if terms.heartbeat_interval.total_seconds() <= 0 or terms.lease_ttl.total_seconds() <= 0:
            raise StreamLost("Welcome without a heartbeat interval and a lease TTL")
        if not stream_batches.OLDEST <= terms.protocol_version <= stream_batches.NEWEST:
            raise StreamLost(
                f"the coordinator chose agent protocol {terms.protocol_version}; this agent "
                f"speaks {stream_batches.OLDEST} to {stream_batches.NEWEST}"
            )
        self._outbox.batching = terms.protocol_version >= stream_batches.BATCHES
        log.info("connected to %s (coordinator %s)", self.target, terms.coordinator_id)
        self._state.lease_ttl = terms.lease_ttl.total_seconds()
        for lease in terms.revoked:
            self._book.revoke(lease)
        for lease, result in self._book.pending():
            log.info("lease %s: re-sending its report", lease)
            self.send_report(lease, result)
        self._last_ack = time.monotonic()
        self.ready = True
        return terms

    # --- reading --------------------------------------------------------------

    async def _read(
        self, call: grpc.aio.StreamStreamCall[pb.AgentMessage, pb.CoordinatorMessage]
    ) -> SessionEnd:
        while isinstance(message := await call.read(), pb.CoordinatorMessage):
            batch = message.batch.messages if message.HasField("batch") else (message,)
            for item in batch:  # in order, as if each came alone
                if self._dispatch(item) is SessionEnd.RELOCATE:
                    return SessionEnd.RELOCATE
        if self._closing:
            return SessionEnd.CLOSED
        raise StreamLost("the coordinator ended the stream")

    def _dispatch(self, message: pb.CoordinatorMessage) -> SessionEnd | None:
        kind = message.WhichOneof("body")
        if kind == "lease":
            self._on_offer(message.lease)
        elif kind == "heartbeat_ack":
            self._on_heartbeat_ack(message.heartbeat_ack)
        elif kind == "cancel":
            self._on_cancel(message.cancel)
        elif kind == "report_ack":
            self._on_report_ack(message.report_ack)
        elif kind == "drain":
            return self._on_drain(message.drain)
        else:
            log.warning("ignoring an unexpected %s from %s", kind, self.target)
        return None

    def _on_offer(self, offer: pb.LeaseOffer) -> None:
        lease = messages.lease_key(offer.lease)
        book = self._book
        if book.checking(lease) or book.execution(lease) or book.report(lease):
            self._answer_again(lease)
        elif self._state.draining:
            self.send_rejection(lease, "the agent is draining")
        elif book.active() >= self._config.capacity:
            self.send_rejection(lease, f"no free slot (capacity {self._config.capacity})")
        else:
            self._accept(lease, offer)

    def _accept(self, lease: LeaseKey, offer: pb.LeaseOffer) -> None:
        """Takes a slot; spawns the attempt, or first checks its preconditions, in the background.

        Nothing here waits: the next offer is read at once, and sees the slot used.
        """
        spec = messages.attempt_spec(offer, default_kill_grace=self._config.default_kill_grace)
        checks = messages.preconditions(offer)
        checking = f"; checking {len(checks)} precondition(s)" if checks else ""
        log.debug("lease %s: offered %s attempt %d%s", lease, spec.task, spec.attempt, checking)
        start_in = messages.start_in(offer)
        if checks:
            self._book.check(lease, spec, checks, start_in=start_in)
        else:
            self._book.start(lease, spec, start_in=start_in)  # the book announces the start

    def _answer_again(self, lease: LeaseKey) -> None:
        """A lease offered twice: say again what became of it, start nothing."""
        log.warning("lease %s: offered again; answering with its state", lease)
        execution = self._book.execution(lease)
        report = self._book.report(lease)
        if execution is not None and execution.started is not None:
            self.send_started(lease, execution.spec.argv, execution.started)
        elif report is not None:
            self.send_report(lease, report)
        # Still checking preconditions or spawning: the verdicts or the start will come.

    def _on_heartbeat_ack(self, ack: pb.HeartbeatAck) -> None:
        sent = self._sent_heartbeats.pop(ack.sequence, None)
        for sequence in [seq for seq in self._sent_heartbeats if seq < ack.sequence]:
            del self._sent_heartbeats[sequence]
        revoked = {messages.lease_key(ref) for ref in ack.revoked}
        for lease in revoked:
            self._book.revoke(lease)
        if sent is not None:
            sent_at, leases = sent
            # Renewed from when the heartbeat left, not when the answer came:
            # the coordinator renewed them somewhere in between.
            self._book.renew([lease for lease in leases if lease not in revoked], at=sent_at)
        self._last_ack = time.monotonic()
        self.healthy = True

    def _on_cancel(self, cancel: pb.CancelAttempt) -> None:
        lease = messages.lease_key(cancel.lease)
        message = f"cancelled: {cancel.reason}" if cancel.reason else "cancelled"
        if not self._book.kill(lease, AttemptOutcome.CANCELLED, message):
            state = "already finished" if self._book.report(lease) else "not held"
            log.info("lease %s: cancel ignored: %s", lease, state)

    def _on_report_ack(self, ack: pb.ReportAck) -> None:
        lease = messages.lease_key(ack.lease)
        if self._book.acknowledge(lease) is None:
            log.info("lease %s: acknowledgement of no pending report", lease)
        elif ack.accepted:
            log.debug("lease %s: report accepted", lease)
        else:
            log.warning("lease %s: report refused: %s", lease, ack.reason or "no reason given")

    def _on_drain(self, drain: pb.Drain) -> SessionEnd | None:
        reason = drain.reason or "no reason given"
        if drain.reconnect_elsewhere:
            log.info("coordinator %s is leaving (%s); reconnecting elsewhere", self.target, reason)
            return SessionEnd.RELOCATE
        self._state.request_drain(f"the coordinator asked: {reason}")
        return None

    # --- heartbeats -----------------------------------------------------------

    async def _heartbeat(self, terms: messages.Terms) -> None:
        interval = terms.heartbeat_interval.total_seconds()
        ttl = terms.lease_ttl.total_seconds()
        while True:
            if time.monotonic() - self._last_ack >= ttl:
                raise StreamLost(f"no heartbeat acknowledged for {ttl:g}s")
            self._send_heartbeat(ttl)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_heartbeat.wait(), interval)
            self._wake_heartbeat.clear()

    def _send_heartbeat(self, ttl: float) -> None:
        now = time.monotonic()
        self._sequence += 1
        leases = self._book.held()
        self._sent_heartbeats[self._sequence] = (now, leases)
        # An answer to a heartbeat older than the TTL renews nothing: forget it.
        for sequence, (sent_at, _) in list(self._sent_heartbeats.items()):
            if now - sent_at > ttl:
                del self._sent_heartbeats[sequence]
        self._outbox.put(
            messages.heartbeat(leases, sequence=self._sequence, draining=self._state.draining)
        )
