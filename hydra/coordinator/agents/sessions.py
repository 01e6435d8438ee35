"""The agents connected to this coordinator: what each holds, and what is sent to it."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import grpc

from hydra.coordinator.agents import protocol
from hydra.coordinator.store.records import ClaimedRun, LeaseTimes, ReportVerdict
from hydra.coordinator.templates import Rendered
from hydra.domain import DEFAULT_OUTPUT_LIMIT, LeaseKey, Precondition
from hydra.limits import MAX_MESSAGE_BYTES, format_bytes
from hydra.v1 import agent_service_pb2 as pb

#: Bytes an offer may still grow by as it leaves (its `start_in`, see `outgoing`).
OFFER_HEADROOM = 64


class OfferTooLarge(Exception):
    """An offer that does not fit in one message to the agent."""

    def __init__(self, size: int) -> None:
        super().__init__(
            f"the lease offer is {size} bytes ({format_bytes(size)}), more than the "
            f"{format_bytes(MAX_MESSAGE_BYTES)} message limit between coordinator and agent"
        )
        self.size = size


@dataclass(eq=False, kw_only=True)
class AgentSession:
    """One agent's open stream: its labels, slots, leases, and outgoing messages."""

    agent_id: str
    #: The agent process: another one with the same id is refused while this one is live.
    instance_id: str
    hostname: str
    labels: Mapping[str, str]
    capacity: int
    draining: bool = False
    #: The name of the credential the agent connected with ("" without authentication):
    #: revoking it ends the stream.
    credential: str = ""
    #: Bytes of output kept per attempt, told to the agent with each offer.
    output_limit: int = DEFAULT_OUTPUT_LIMIT
    #: The agent protocol version the stream speaks (hydra.stream_batches).
    protocol_version: int = 1
    #: Why the stream is ended as an error (set by its reader), or None.
    refusal: tuple[grpc.StatusCode, str] | None = None
    held: set[LeaseKey] = field(default_factory=set)
    #: Slots being claimed for, whose leases are not offered yet.
    reserved: int = 0
    outbox: asyncio.Queue[pb.CoordinatorMessage | None] = field(default_factory=asyncio.Queue)
    serial: int = field(default_factory=itertools.count().__next__)
    #: When the agent was last heard from on this stream (monotonic seconds).
    heard_at: float = field(default_factory=time.monotonic)
    _not_before: dict[str, datetime] = field(default_factory=dict)

    def heard(self) -> None:
        """The agent sent a message on this stream."""
        self.heard_at = time.monotonic()

    def live(self, ttl: timedelta) -> bool:
        """Heard from within `ttl`: a stream silent for longer is a dead agent's
        (a host that vanished leaves its connection open)."""
        return time.monotonic() - self.heard_at < ttl.total_seconds()

    @property
    def free_slots(self) -> int:
        """Slots the dispatcher may fill now."""
        return 0 if self.draining else max(0, self.capacity - len(self.held) - self.reserved)

    def offer(
        self,
        run: ClaimedRun,
        rendered: Rendered,
        checks: Iterable[Precondition],
        times: LeaseTimes,
    ) -> None:
        """Offer a leased run; the agent holds its slot from now on. A run leased ahead
        of its `not_before` gets its `start_in` when the offer leaves (see `outgoing`).

        Raises:
            OfferTooLarge: the offer would not fit in a message (nothing is sent:
                sending it would end the stream, and the agent would get it again).
        """
        message = protocol.offer(run, rendered, checks, times, output_limit=self.output_limit)
        size = message.ByteSize()
        if size + OFFER_HEADROOM > MAX_MESSAGE_BYTES:
            raise OfferTooLarge(size)
        self.held.add(LeaseKey(run.run_id, run.lease_token))
        if run.not_before is not None:
            self._not_before[run.run_id] = run.not_before
        self._send(message)

    def cancel(self, lease: LeaseKey, reason: str) -> None:
        """Tell the agent to kill the attempt under this lease; its slot is free."""
        self.held.discard(lease)
        self._send(protocol.cancel(lease, reason))

    def drain(self, reason: str, *, reconnect_elsewhere: bool = False) -> None:
        """Tell the agent to take no new leases."""
        self.draining = True
        self._send(protocol.drain(reason, reconnect_elsewhere=reconnect_elsewhere))

    def ack_heartbeat(self, sequence: int, revoked: Iterable[LeaseKey]) -> None:
        """Answer a recorded heartbeat; the revoked leases are no longer held."""
        revoked = list(revoked)
        self.held.difference_update(revoked)
        self._send(protocol.heartbeat_ack(sequence, revoked))

    def ack_report(self, lease: LeaseKey, verdict: ReportVerdict) -> None:
        """Answer an attempt's end: recorded or refused; its slot is free either way."""
        self.held.discard(lease)
        self._send(protocol.report_ack(lease, verdict))

    def _send(self, message: pb.CoordinatorMessage) -> None:
        self.outbox.put_nowait(message)

    def outgoing(self, message: pb.CoordinatorMessage) -> pb.CoordinatorMessage:
        """A message about to be written to the stream, with its last-moment fields."""
        if message.HasField("lease"):
            not_before = self._not_before.pop(message.lease.lease.run_id, None)
            if not_before is not None:
                return protocol.with_start_in(message, not_before)
        return message

    def close(self) -> None:
        """End the outgoing stream."""
        self.outbox.put_nowait(None)


class SessionRegistry:
    """Sessions by agent id; wakes the dispatcher when slots may have freed up."""

    def __init__(self) -> None:
        self._sessions: dict[str, AgentSession] = {}
        self.slots_changed = asyncio.Event()

    def open(self, session: AgentSession) -> None:
        """Register a session, closing an older stream of the same agent: the same
        process reconnected, or the older one went silent (another instance is
        refused while its session is live)."""
        old = self._sessions.get(session.agent_id)
        if old is not None:
            old.close()
        self._sessions[session.agent_id] = session
        self.slots_changed.set()

    def close(self, session: AgentSession) -> None:
        """Forget a session if it is still the agent's current one."""
        if self._sessions.get(session.agent_id) is session:
            del self._sessions[session.agent_id]

    def get(self, agent_id: str) -> AgentSession | None:
        """The agent's current session on this coordinator."""
        return self._sessions.get(agent_id)

    def with_free_slots(self) -> Iterator[AgentSession]:
        """Sessions that can take work, most free slots first."""
        ready = [s for s in self._sessions.values() if s.free_slots > 0]
        return iter(sorted(ready, key=lambda s: -s.free_slots))

    def __iter__(self) -> Iterator[AgentSession]:
        return iter(list(self._sessions.values()))

    def __len__(self) -> int:
        return len(self._sessions)
