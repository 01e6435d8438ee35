"""The lease book spawns in the background; offers are taken without waiting for a spawn."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hydra.agent import messages
from hydra.agent.attempt import AttemptResult, AttemptSpec, OutputStream, Started
from hydra.agent.daemon import AgentConfig
from hydra.agent.leases import LeaseBook
from hydra.agent.session import AgentState, Session
from hydra.domain import AttemptOutcome, LeaseKey, PreconditionVerdict
from hydra.v1 import agent_service_pb2 as pb

from support.proc import eventually, processes_with_run_id


class Listener:
    """Records what the book tells, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, LeaseKey, Any]] = []

    def attempt_output(self, lease: LeaseKey, stream: OutputStream, data: bytes) -> bool:
        self.events.append(("output", lease, data))
        return True

    def attempt_started(self, lease: LeaseKey, argv: Sequence[str], started: Started) -> None:
        self.events.append(("started", lease, started))

    def attempt_finished(self, lease: LeaseKey, result: AttemptResult) -> None:
        self.events.append(("finished", lease, result))

    def preconditions_checked(self, lease: LeaseKey, verdicts: list[PreconditionVerdict]) -> None:
        self.events.append(("checked", lease, verdicts))

    def kinds(self, lease: LeaseKey) -> list[str]:
        return [kind for kind, about, _ in self.events if about == lease]

    def result(self, lease: LeaseKey) -> AttemptResult:
        results = [
            value for kind, about, value in self.events if kind == "finished" and about == lease
        ]
        assert len(results) == 1, self.events
        result: AttemptResult = results[0]
        return result

    def output(self, lease: LeaseKey) -> bytes:
        return b"".join(
            value for kind, about, value in self.events if kind == "output" and about == lease
        )


def spec(run_id: str, *argv: str) -> AttemptSpec:
    return AttemptSpec(
        run_id=run_id, task="demo.task", attempt=1, argv=argv, kill_grace=timedelta(seconds=0.5)
    )


def offer(run_id: str, *argv: str) -> pb.CoordinatorMessage:
    lease = pb.LeaseRef(run_id=run_id, lease_token=1)
    return pb.CoordinatorMessage(
        lease=pb.LeaseOffer(lease=lease, task="demo.task", attempt=1, argv=argv)
    )


class RecordingSession(Session):
    """A session that is never connected; it records the rejections it would send."""

    def __init__(self, state: AgentState) -> None:
        super().__init__("127.0.0.1:1", state)
        self.rejections: list[tuple[LeaseKey, str]] = []

    def send_rejection(self, lease: LeaseKey, reason: str) -> None:
        self.rejections.append((lease, reason))
        super().send_rejection(lease, reason)


# --- the book -----------------------------------------------------------------------


async def test_start_holds_the_lease_at_once_and_spawns_in_the_background(run_id: str) -> None:
    listener = Listener()
    book = LeaseBook(listener)
    lease = LeaseKey(run_id, 1)

    book.start(lease, spec(run_id, "sh", "-c", 'echo "$HYDRA_OUTPUT"'))

    execution = book.execution(lease)
    assert execution is not None
    assert execution.started is None  # not spawned yet, but held and using a slot
    assert (book.held(), book.active(), book.processes()) == ([lease], 1, 1)
    assert listener.events == []

    await book.wait_until(lambda: book.processes() == 0, 10)
    await book.close()

    assert listener.kinds(lease) == ["started", "output", "finished"]
    assert listener.result(lease).outcome is AttemptOutcome.SUCCEEDED
    assert book.pending() == [(lease, listener.result(lease))]
    output_file = Path(listener.output(lease).decode().strip())
    assert output_file.parent.name.startswith(f"{run_id}-1-")  # the attempt's own directory
    assert not output_file.parent.parent.exists()  # close removed the agent's directory


async def test_a_spawn_failure_is_reported_and_keeps_the_lease_until_acknowledged(
    run_id: str,
) -> None:
    listener = Listener()
    book = LeaseBook(listener)
    lease = LeaseKey(run_id, 1)

    book.start(lease, spec(run_id, "/nonexistent/program"))
    await book.wait_until(lambda: book.processes() == 0, 10)

    assert listener.kinds(lease) == ["finished"]
    result = listener.result(lease)
    assert result.outcome is AttemptOutcome.FAILED
    assert result.message.startswith("cannot start: ")
    assert book.held() == [lease]
    assert book.acknowledge(lease) == result
    await book.close()


async def test_a_lease_revoked_while_spawning_is_never_announced(run_id: str) -> None:
    listener = Listener()
    book = LeaseBook(listener)
    lease = LeaseKey(run_id, 1)

    book.start(lease, spec(run_id, "sleep", "1000"))
    book.revoke(lease)

    assert (book.held(), book.active()) == ([], 0)
    await book.wait_until(lambda: book.processes() == 0, 10)
    await book.close()
    assert listener.events == []


async def test_an_attempt_killed_before_its_spawn_never_starts(run_id: str) -> None:
    listener = Listener()
    book = LeaseBook(listener)
    lease = LeaseKey(run_id, 1)

    book.start(lease, spec(run_id, "sleep", "1000"))
    book.kill_all(AttemptOutcome.CANCELLED, "agent stopped", immediately=True)
    await book.close()

    assert book.processes() == 0
    assert listener.kinds(lease) == ["finished"]
    result = listener.result(lease)
    assert result.outcome is AttemptOutcome.CANCELLED
    assert result.message == "agent stopped (before it started)"


async def test_close_waits_for_an_attempt_still_spawning(run_id: str) -> None:
    listener = Listener()
    book = LeaseBook(listener)
    lease = LeaseKey(run_id, 1)

    book.start(lease, spec(run_id, "sleep", "1000"))
    await asyncio.sleep(0)  # the spawn begins
    book.kill_all(AttemptOutcome.CANCELLED, "agent stopped", immediately=True)
    await book.close()

    assert book.processes() == 0
    assert listener.kinds(lease) == ["started", "finished"]
    assert listener.result(lease).outcome is AttemptOutcome.CANCELLED


# --- leased ahead: start_in -------------------------------------------------------------


async def test_an_attempt_leased_ahead_starts_after_start_in(run_id: str) -> None:
    listener = Listener()
    book = LeaseBook(listener)
    lease = LeaseKey(run_id, 1)
    loop = asyncio.get_running_loop()

    offered = loop.time()
    book.start(lease, spec(run_id, "true"), start_in=0.2)
    assert book.held() == [lease] and book.active() == 1  # the slot is used while it waits
    await book.wait_until(lambda: listener.kinds(lease) == ["started", "finished"], 10)
    started = next(value for kind, _, value in listener.events if kind == "started")
    waited = loop.time() - offered
    assert waited >= 0.2
    assert listener.result(lease).outcome is AttemptOutcome.SUCCEEDED
    assert started.started_at is not None
    await book.close()


async def test_a_kill_while_waiting_to_start_spawns_nothing(run_id: str) -> None:
    listener = Listener()
    book = LeaseBook(listener)
    lease = LeaseKey(run_id, 1)

    book.start(lease, spec(run_id, "sleep", "1000"), start_in=30)
    await asyncio.sleep(0.05)
    assert book.kill(lease, AttemptOutcome.CANCELLED, "cancelled by request")
    await book.wait_until(lambda: listener.kinds(lease) == ["finished"], 5)

    assert listener.result(lease).outcome is AttemptOutcome.CANCELLED
    assert processes_with_run_id(run_id) == []
    await book.close()


# --- offers while spawning ----------------------------------------------------------


@pytest.mark.parametrize("capacity", [1, 2])
async def test_an_offer_arriving_while_another_attempt_spawns_sees_its_slot_used(
    run_id: str, capacity: int
) -> None:
    listener = Listener()
    book = LeaseBook(listener)
    config = AgentConfig(targets=["127.0.0.1:1"], agent_id="agent-1", capacity=capacity)
    session = RecordingSession(
        AgentState(config=config, book=book, request_drain=lambda reason: None)
    )
    run_ids = [f"{run_id}-{n}" for n in range(capacity + 1)]

    # Offers read one after another, with no turn of the loop for any spawn in between.
    for each in run_ids:
        session._dispatch(offer(each, "sh", "-c", "echo $HYDRA_RUN_ID"))

    accepted, refused = [LeaseKey(each, 1) for each in run_ids[:-1]], LeaseKey(run_ids[-1], 1)
    assert all(book.execution(lease) is not None for lease in accepted)
    assert session.rejections == [(refused, f"no free slot (capacity {capacity})")]
    await eventually(lambda: all(book.report(lease) for lease in accepted))
    for lease in accepted:
        assert listener.kinds(lease) == ["started", "output", "finished"]
        assert listener.output(lease) == f"{lease.run_id}\n".encode()
    assert listener.kinds(refused) == []
    await book.close()


@pytest.mark.parametrize(
    ("start_in", "seconds"),
    [
        (None, 0.0),
        (timedelta(0), 0.0),
        (timedelta(milliseconds=-5), 0.0),
        (timedelta(milliseconds=30), 0.03),
    ],
)
def test_start_in_of_an_offer(start_in: timedelta | None, seconds: float) -> None:
    message = pb.LeaseOffer(task="demo.task")
    if start_in is not None:
        message.start_in.FromTimedelta(start_in)
    assert messages.start_in(message) == pytest.approx(seconds)
