"""A crowd of minimal agents in one process, to weigh a coordinator's cost per stream.

Each simulated agent opens a channel of its own (as an agent on its own host
would), says Hello with capacity 1 and no labels, heartbeats at the interval
the Welcome sets (2 s by default), refuses every lease it is offered, and does
nothing else. Prints ``welcomed N`` once every stream has its Welcome.

Run as ``python -m bench.agent_sim --target 127.0.0.1:PORT --count 500``; it
runs until SIGTERM or ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import grpc.aio

from hydra.v1 import agent_service_pb2 as pb
from hydra.v1.agent_service_pb2_grpc import AgentServiceStub

#: Streams opened at once; then a short pause, so Hellos do not all land together.
BATCH = 25
BATCH_PAUSE_S = 0.05
Call = grpc.aio.StreamStreamCall[pb.AgentMessage, pb.CoordinatorMessage]


@dataclass
class Crowd:
    """Shared state of the simulated agents."""

    count: int
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    welcomed: int = 0
    failed: int = 0

    def on_welcome(self) -> None:
        """Count a Welcome; announce when all are in."""
        self.welcomed += 1
        if self.welcomed == self.count:
            print(f"welcomed {self.welcomed}", flush=True)


async def simulate(target: str, crowd: Crowd) -> None:
    """Open `crowd.count` streams and keep them until `crowd.stop` is set."""
    agents = []
    for index in range(crowd.count):
        agents.append(asyncio.create_task(_agent(target, f"sim-{index}", crowd)))
        if (index + 1) % BATCH == 0:
            await asyncio.sleep(BATCH_PAUSE_S)
    await asyncio.gather(*agents)


async def _agent(target: str, agent_id: str, crowd: Crowd) -> None:
    outbox: asyncio.Queue[pb.AgentMessage | None] = asyncio.Queue()
    hello = pb.AgentMessage(
        hello=pb.Hello(agent_id=agent_id, hostname="agent-sim", capacity=1, version="bench")
    )
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            call = AgentServiceStub(channel).Connect(_requests(hello, outbox))
            welcome = await call.read()
            if not isinstance(welcome, pb.CoordinatorMessage) or not welcome.HasField("welcome"):
                raise RuntimeError(f"{agent_id}: no Welcome")
            crowd.on_welcome()
            interval = welcome.welcome.heartbeat_interval.ToTimedelta().total_seconds()
            reader = asyncio.create_task(_read(call, outbox))
            await _heartbeat(outbox, interval, crowd.stop)
            outbox.put_nowait(None)
            with contextlib.suppress(TimeoutError, grpc.aio.AioRpcError):
                await asyncio.wait_for(reader, timeout=5)
    except grpc.aio.AioRpcError as error:
        crowd.failed += 1
        print(f"{agent_id}: {error.code().name}: {error.details()}", flush=True)


async def _requests(
    hello: pb.AgentMessage, outbox: asyncio.Queue[pb.AgentMessage | None]
) -> AsyncIterator[pb.AgentMessage]:
    yield hello
    while (message := await outbox.get()) is not None:
        yield message


async def _heartbeat(
    outbox: asyncio.Queue[pb.AgentMessage | None], interval: float, stop: asyncio.Event
) -> None:
    sequence = 0
    while not stop.is_set():
        sequence += 1
        outbox.put_nowait(pb.AgentMessage(heartbeat=pb.Heartbeat(sequence=sequence)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def _read(call: Call, outbox: asyncio.Queue[pb.AgentMessage | None]) -> None:
    """Refuse every offer; ignore acknowledgements."""
    while isinstance(message := await call.read(), pb.CoordinatorMessage):
        if message.HasField("lease"):
            refusal = pb.LeaseRejected(lease=message.lease.lease, reason="simulated agent")
            outbox.put_nowait(pb.AgentMessage(lease_rejected=refusal))


async def _main(target: str, count: int, max_seconds: float) -> None:
    crowd = Crowd(count=count)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, crowd.stop.set)
    loop.call_later(max_seconds, crowd.stop.set)
    await simulate(target, crowd)
    print(f"stopped: {crowd.welcomed} welcomed, {crowd.failed} failed", flush=True)


def main() -> None:
    """Parse flags and run the crowd."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="coordinator host:port")
    parser.add_argument("--count", type=int, default=500, help="agent streams")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop after this")
    args = parser.parse_args()
    asyncio.run(_main(args.target, args.count, args.max_seconds))


if __name__ == "__main__":
    main()
