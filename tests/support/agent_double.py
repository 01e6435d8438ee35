"""A hand-driven agent: one real ``AgentService.Connect`` stream whose every
message the test writes, for checking what the coordinator does with old,
late or forged reports. It runs nothing."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc

from hydra import __version__
from hydra.v1 import agent_service_pb2 as pb
from hydra.v1.agent_service_pb2_grpc import AgentServiceStub

#: What the reader thread puts after the last message: the stream ended.
_END = object()


class ScriptedAgent:
    """An agent stream over real gRPC; the test sends each message and reads the answers.

    Usage::

        with ScriptedAgent(address, "zombie") as agent:
            agent.hello()
            offer = agent.expect("lease")
            agent.started(offer.lease, offer.argv)
    """

    def __init__(
        self,
        target: str,
        agent_id: str,
        *,
        capacity: int = 1,
        labels: Mapping[str, str] | None = None,
        instance_id: str = "",
    ) -> None:
        self.agent_id = agent_id
        self.instance_id = instance_id
        self.capacity = capacity
        self.labels = dict(labels or {})
        #: Every stream message received, in order (a batch is one; `expect` reads its items).
        self.received: list[pb.CoordinatorMessage] = []
        self._outgoing: queue.Queue[pb.AgentMessage | None] = queue.Queue()
        self._incoming: queue.Queue[Any] = queue.Queue()
        self._unread: list[pb.CoordinatorMessage] = []
        self._sequence = 0
        self._channel = grpc.insecure_channel(target)
        self._call = AgentServiceStub(self._channel).Connect(self._requests())
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"{agent_id}-reader")
        self._reader.start()

    def __enter__(self) -> ScriptedAgent:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def end_stream(self) -> None:
        """Says nothing more (a half-close): the coordinator ends the stream after
        what was sent before."""
        self._outgoing.put(None)

    def close(self) -> None:
        """Ends the stream from both sides and closes the channel."""
        self._outgoing.put(None)
        self._call.cancel()
        self._reader.join(timeout=10)
        self._channel.close()

    # --- sending --------------------------------------------------------------

    def send(self, **body: Any) -> None:
        """Sends ``AgentMessage(**body)``."""
        self._outgoing.put(pb.AgentMessage(**body))

    def hello(
        self,
        held: Sequence[pb.LeaseRef] = (),
        *,
        protocol_version: int = 0,
        min_protocol_version: int = 0,
    ) -> pb.Welcome:
        """Says Hello and returns the Welcome. The protocol versions are unset by default:
        the agent speaks as one older than versioning (protocol 1, no batches)."""
        self.say_hello(
            held, protocol_version=protocol_version, min_protocol_version=min_protocol_version
        )
        welcome: pb.Welcome = self.expect("welcome")
        return welcome

    def say_hello(
        self,
        held: Sequence[pb.LeaseRef] = (),
        *,
        protocol_version: int = 0,
        min_protocol_version: int = 0,
    ) -> None:
        """Sends Hello without waiting for the answer (e.g. a refusal)."""
        self.send(
            hello=pb.Hello(
                agent_id=self.agent_id,
                instance_id=self.instance_id,
                hostname="scripted",
                capacity=self.capacity,
                labels=self.labels,
                version=__version__,
                held_leases=list(held),
                protocol_version=protocol_version,
                min_protocol_version=min_protocol_version,
            )
        )

    def send_batch(self, *items: pb.AgentMessage) -> None:
        """Sends `items` as one batch (agent protocol 2)."""
        self._outgoing.put(pb.AgentMessage(batch=pb.AgentBatch(messages=list(items))))

    def started(self, lease: pb.LeaseRef, argv: Sequence[str]) -> None:
        """Says the attempt of `lease` started now."""
        started = pb.AttemptStarted(lease=lease, argv=list(argv), pid=1)
        started.started_at.FromDatetime(datetime.now(UTC))
        self.send(attempt_started=started)

    def finished(
        self, lease: pb.LeaseRef, outcome: pb.AttemptOutcome.ValueType, argv: Sequence[str]
    ) -> pb.ReportAck:
        """Reports the attempt of `lease` ended with `outcome`; returns the ReportAck."""
        now = datetime.now(UTC)
        finished = pb.AttemptFinished(lease=lease, outcome=outcome, exit_code=0, argv=list(argv))
        finished.started_at.FromDatetime(now)
        finished.finished_at.FromDatetime(now)
        self.send(attempt_finished=finished)
        ack: pb.ReportAck = self.expect("report_ack")
        return ack

    def heartbeat(
        self, leases: Sequence[pb.LeaseRef], *, draining: bool = False
    ) -> pb.HeartbeatAck:
        """Heartbeats for `leases` (draining: take no more work); returns its acknowledgement."""
        self._sequence += 1
        sequence = self._sequence
        heartbeat = pb.Heartbeat(leases=list(leases), sequence=sequence, draining=draining)
        self.send(heartbeat=heartbeat)
        while True:
            ack: pb.HeartbeatAck = self.expect("heartbeat_ack")
            if ack.sequence == sequence:
                return ack

    # --- receiving ------------------------------------------------------------

    def expect(self, kind: str, timeout: float = 10.0) -> Any:
        """The body of the next unread message of `kind`; others are kept for later.

        Raises:
            AssertionError: none came within `timeout` seconds, or the stream ended.
        """
        for index, message in enumerate(self._unread):
            if message.WhichOneof("body") == kind:
                del self._unread[index]
                return getattr(message, kind)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                item = self._incoming.get(timeout=remaining)
            except queue.Empty:
                break
            if item is _END or isinstance(item, grpc.RpcError):
                self._incoming.put(item)  # later calls see the end too
                raise AssertionError(f"the stream ended while waiting for {kind}: {item}")
            if item.WhichOneof("body") == kind:
                return getattr(item, kind)
            self._unread.append(item)
        raise AssertionError(f"no {kind} within {timeout:g}s; unread: {self._unread}")

    def expect_end(self, timeout: float = 10.0) -> None:
        """Waits until the coordinator has ended the stream (messages before it are kept)."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                item = self._incoming.get(timeout=remaining)
            except queue.Empty:
                break
            if item is _END or isinstance(item, grpc.RpcError):
                self._incoming.put(item)
                return
            self._unread.append(item)
        raise AssertionError(f"the stream did not end within {timeout:g}s")

    def refusal(self, timeout: float = 10.0) -> grpc.RpcError:
        """The error the coordinator ended the stream with (e.g. after a refused Hello).

        Raises:
            AssertionError: the stream did not end within `timeout`, or ended without one.
        """
        self.expect_end(timeout)
        item = self._incoming.get()
        self._incoming.put(item)
        assert isinstance(item, grpc.RpcError), f"the stream ended without an error: {item}"
        return item

    def _requests(self) -> Iterator[pb.AgentMessage]:
        while (message := self._outgoing.get()) is not None:
            yield message

    def _read(self) -> None:
        try:
            for message in self._call:
                self.received.append(message)  # as it came: a batch is one
                if message.WhichOneof("body") == "batch":
                    for item in message.batch.messages:
                        self._incoming.put(item)
                else:
                    self._incoming.put(message)
        except grpc.RpcError as error:
            self._incoming.put(error)
        else:
            self._incoming.put(_END)
