"""An output flood keeps its end (issue 11, fault 7): `seq 1 15000000; echo
END-OF-OUTPUT` succeeded, but the stored output stopped at line 8,495,240: the
agent's outbox dropped the rest, and only its own log said so. Now the
coordinator keeps the head that fit, a marker counting the bytes dropped, and
the true tail, which the agent sends with the attempt's end."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.hydra import HYDRACTL
from harness.wait import wait_for
from hydra.client import Client, RunState, Task
from hydra.domain import output_budget
from hydra.v1 import agent_service_pb2 as pb
from hydra.v1 import run_service_pb2

from support.agent_double import ScriptedAgent
from support.cluster import CoordinatorThread, Database, cluster

LINES = 15_000_000
#: What the flood writes, byte for byte: every line of seq, then the last one.
EXPECTED_BYTES = sum(len(f"{n}\n") for n in range(1, LINES + 1)) + len(b"END-OF-OUTPUT\n")


def _expected_tail(size: int) -> bytes:
    """The last `size` bytes of the flood's output."""
    lines: list[bytes] = [b"END-OF-OUTPUT\n"]
    total = len(lines[0])
    n = LINES
    while total < size:
        line = f"{n}\n".encode()
        lines.append(line)
        total += len(line)
        n -= 1
    return b"".join(reversed(lines))[-size:]


def test_a_flood_keeps_its_head_a_marker_and_its_true_end(db_conninfo: str, tmp_path: Path) -> None:
    db = Database(db_conninfo)
    with cluster(db_conninfo, tmp_path) as (coordinators, _):
        address = coordinators[0].address
        limit = coordinators[0].config.output_limit
        with Client(address) as client:
            client.apply(
                Task(
                    name="flood",
                    command=("sh", "-c", f"seq 1 {LINES}; echo END-OF-OUTPUT"),
                )
            )
            client.apply(Task(name="healthy", command=("echo", "still here")))
            run, _ = client.trigger("flood")
            assert client.wait(run.id, timeout=60).state is RunState.SUCCEEDED

            chunks = list(client.tail_logs(run.id))
            stored = b"".join(chunk.data for chunk in chunks)
            assert stored.endswith(b"\n15000000\nEND-OF-OUTPUT\n")
            assert stored.startswith(b"1\n2\n3\n")
            dropped = [chunk.dropped_bytes for chunk in chunks if chunk.dropped_bytes]
            assert len(stored) <= limit
            # One marker, counting exactly what is not stored.
            assert dropped == [EXPECTED_BYTES - len(stored)]
            marker = next(i for i, chunk in enumerate(chunks) if chunk.dropped_bytes)
            head = b"".join(chunk.data for chunk in chunks[:marker])
            tail = stored[len(head) :]
            assert tail == _expected_tail(len(tail))
            assert len(tail) >= limit // 4  # a real tail, not a line or two
            assert int(db.value("SELECT sum(length(data)) FROM hydra_attempt_output")) == len(
                stored
            )

            # hydractl logs shows the marker in its place, and the end.
            shown = subprocess.run(
                [*HYDRACTL, "--coordinator", address, "logs", run.id],
                capture_output=True,
                timeout=60,
                check=True,
            )
            assert b"[hydra: " + f"{dropped[0]:,}".encode() + b" bytes dropped]" in shown.stdout
            assert shown.stdout.endswith(b"END-OF-OUTPUT\n")

            # The cluster kept serving.
            healthy, _ = client.trigger("healthy")
            assert client.wait(healthy.id, timeout=20).state is RunState.SUCCEEDED
            assert b"".join(c.data for c in client.tail_logs(healthy.id)) == b"still here\n"


def _finished(lease: pb.LeaseRef, argv: Sequence[str], **fields: Any) -> pb.AttemptFinished:
    now = datetime.now(UTC)
    report = pb.AttemptFinished(
        lease=lease, outcome=pb.ATTEMPT_OUTCOME_SUCCEEDED, exit_code=0, argv=list(argv), **fields
    )
    report.started_at.FromDatetime(now)
    report.finished_at.FromDatetime(now)
    return report


def _output(lease: pb.LeaseRef, data: bytes) -> pb.OutputChunk:
    return pb.OutputChunk(lease=lease, stream=run_service_pb2.OUTPUT_STREAM_STDOUT, data=data)


def test_a_report_sent_again_after_a_reconnect_brings_its_tail(db_conninfo: str) -> None:
    db = Database(db_conninfo)
    coordinator = CoordinatorThread(db_conninfo).start()
    limit = coordinator.config.output_limit
    head = output_budget(limit).head
    total = 3 * limit
    try:
        with Client(coordinator.address) as client:
            client.apply(Task(name="chatty", command=("true",)))
            with ScriptedAgent(coordinator.address, "scripted") as agent:
                agent.hello()
                agent.heartbeat([])
                run, _ = client.trigger("chatty")
                offer = agent.expect("lease")
                assert offer.output_limit == limit  # the agent learns what is kept
                agent.started(offer.lease, offer.argv)
                for _ in range(head // 32768 + 4):  # more than the head: the rest is dropped
                    agent.send(output=_output(offer.lease, b"h" * 32768))
                wait_for(
                    lambda: db.value("SELECT sum(length(data)) FROM hydra_attempt_output") == head,
                    message="the head to be stored",
                )
            # The stream broke before the report; the agent reconnects and sends it.
            with ScriptedAgent(coordinator.address, "scripted") as agent:
                agent.hello(held=[offer.lease])
                tail = pb.OutputTail(
                    stream=run_service_pb2.OUTPUT_STREAM_STDOUT,
                    total_bytes=total,
                    data=b"t" * 1000 + b"END\n",
                )
                agent.send(attempt_finished=_finished(offer.lease, offer.argv, output_tails=[tail]))
                assert agent.expect("report_ack").accepted
            chunks = list(client.tail_logs(run.id))
            assert b"".join(c.data for c in chunks) == b"h" * head + b"t" * 1000 + b"END\n"
            assert [c.dropped_bytes for c in chunks if c.dropped_bytes] == [total - head - 1004]
    finally:
        coordinator.stop()


def test_an_agent_that_sends_no_tail_still_works(db_conninfo: str) -> None:
    coordinator = CoordinatorThread(db_conninfo).start()
    try:
        with (
            Client(coordinator.address) as client,
            ScriptedAgent(coordinator.address, "old-agent") as agent,
        ):
            client.apply(Task(name="old", command=("true",)))
            agent.hello()
            agent.heartbeat([])
            run, _ = client.trigger("old")
            offer = agent.expect("lease")
            agent.started(offer.lease, offer.argv)
            agent.send(output=_output(offer.lease, b"hello\n"))
            assert agent.finished(offer.lease, pb.ATTEMPT_OUTCOME_SUCCEEDED, offer.argv).accepted
            assert client.get_run(run.id).state is RunState.SUCCEEDED
            chunks = list(client.tail_logs(run.id))
            assert [(c.data, c.dropped_bytes) for c in chunks] == [(b"hello\n", 0)]
    finally:
        coordinator.stop()
