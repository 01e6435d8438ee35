"""A crowd of watchers cannot starve the control loops (issue 11, fault 5).

Before: every Watch stream ran `get_run` on the coordinator's 10-connection pool
for every changed run, so 2,000 watchers and one Trigger drained the pool: the
Trigger got UNAVAILABLE, the dispatcher, reaper and presence loops failed, an
agent's report batch failed and its stream was closed. Nothing capped streams or
concurrent calls, and a watcher that never read was buffered without bound.

Now each coordinator reads a changed run once and fans it out; streams and
concurrent unary calls are capped; a watcher that falls behind is ended.

Everything here is real: a `hydra coordinator` process (default pool of 10),
a `hydra agent` process, PostgreSQL, and grpc.aio clients on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.hydra import Coordinator, coordinator_argv, wait_serving
from harness.net import free_port
from harness.wait import wait_until
from hydra.client import Client, Cron, Task
from hydra.v1 import run_service_pb2 as run_pb
from hydra.v1 import run_service_pb2_grpc as run_grpc
from hydra.v1 import task_service_pb2 as task_pb
from hydra.v1 import task_service_pb2_grpc as task_grpc
from hydra.v1 import types_pb2

from support.cluster import Database
from support.processes import FAST_TIMING, Processes, processes_in

#: As many Watch streams as the issue opened; one client process holds them all.
WATCHERS = 2000
#: Streams opened at once.
WAVE = 200
#: Channels (TCP connections) the crowd is spread over.
CHANNELS = 8
#: Trigger -> the attempt's started_at, on a loaded 2-core machine.
START_WITHIN_S = 1.5
SUCCEEDED = types_pb2.RUN_STATE_SUCCEEDED
#: What the coordinator's log must never say while the crowd watches.
STARVED = (
    "recording its messages failed",
    "database unavailable",
    "failed; retrying",
    "; retrying",
)


def _start_coordinator(processes: Processes, conninfo: str, *flags: str) -> Coordinator:
    """A `hydra coordinator` process (pool 10, as by default) with extra flags."""
    address = f"127.0.0.1:{free_port()}"
    argv = coordinator_argv(conninfo, address, timing=FAST_TIMING, log_level="info")
    process = processes.start("coordinator", [*argv, *flags])
    wait_serving(process, address, timeout=30)
    return Coordinator(process, address)


@contextlib.contextmanager
def _cluster(tmp_path: Path, conninfo: str, *flags: str) -> Iterator[tuple[Coordinator, Client]]:
    with processes_in(tmp_path) as processes:
        coordinator = _start_coordinator(processes, conninfo, *flags)
        processes.agent(coordinator, "crowd-agent", capacity=2)
        with Client(coordinator.address) as client:
            yield coordinator, client


@contextlib.asynccontextmanager
async def _channels(address: str, count: int, **options: Any) -> AsyncIterator[list[Any]]:
    """`count` channels on separate connections; `options` become channel arguments."""
    arguments = [("grpc." + k.replace("__", "."), v) for k, v in options.items()]
    channels = [
        grpc.aio.insecure_channel(address, options=[("grpc.channel_id", i), *arguments])
        for i in range(count)
    ]
    try:
        yield channels
    finally:
        await asyncio.gather(*(c.close(grace=None) for c in channels))


async def _healthy(channel: Any) -> bool:
    response = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=5
    )
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


class Watcher:
    """One Watch stream, read in a task: every (run id, state) it saw, and how it ended."""

    def __init__(self, channel: Any, **request: str) -> None:
        self.call = run_grpc.RunServiceStub(channel).Watch(run_pb.WatchRunsRequest(**request))
        self.seen: dict[str, set[int]] = {}
        self.error: grpc.aio.AioRpcError | None = None
        self.task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> Watcher:
        self.task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        try:
            async for event in self.call:
                self.seen.setdefault(event.run.id, set()).add(event.run.state)
        except grpc.aio.AioRpcError as error:
            if not self._stopping:  # CANCELLED too: a server may cancel calls it cannot take up
                self.error = error

    async def first_event(self) -> None:
        """Wait for this watcher's first event, then stop it."""
        await wait_until(lambda: self.seen or self.error, timeout=10, message="a first event")
        await self.stop()
        assert self.error is None, self.error

    def saw(self, run_id: str, state: int) -> bool:
        return state in self.seen.get(run_id, ())

    async def stop(self) -> None:
        self._stopping = True
        self.call.cancel()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


# --- 2,000 watchers and a Trigger ---------------------------------------------------


async def _crowd_then_trigger(address: str, earlier_run: str) -> dict[str, Any]:
    """Open WATCHERS streams, Trigger `crowd`, and wait until every watcher saw it end."""
    async with _channels(address, CHANNELS) as channels:
        watchers: list[Watcher] = []
        try:
            # In waves, each closed by a watcher of an earlier run, whose first event (that
            # run's state) says the coordinator has taken up the wave: a gRPC server cancels
            # calls past 1,000 waiting to be taken up.
            for _ in range(0, WATCHERS, WAVE):
                wave = [Watcher(channels[i % CHANNELS]).start() for i in range(WAVE)]
                marker = Watcher(channels[0], run_id=earlier_run).start()
                watchers += wave
                await marker.first_event()
            triggered_at = datetime.now(UTC)
            trigger_error = None
            run_id = ""
            try:
                response = await run_grpc.RunServiceStub(channels[0]).Trigger(
                    run_pb.TriggerRunRequest(task="crowd"), timeout=10
                )
                run_id = response.run.id
            except grpc.aio.AioRpcError as error:
                trigger_error = error
            if run_id:
                with contextlib.suppress(AssertionError):
                    await wait_until(
                        lambda: all(w.saw(run_id, SUCCEEDED) or w.error for w in watchers),
                        timeout=15,
                        message="every watcher to see the run succeed",
                    )
            healthy = await _healthy(channels[0])
            return {
                "triggered_at": triggered_at,
                "trigger_error": trigger_error,
                "run_id": run_id,
                "missed": sum(not w.saw(run_id, SUCCEEDED) for w in watchers),
                "broken": [w.error for w in watchers if w.error is not None],
                "healthy": healthy,
            }
        finally:
            await asyncio.gather(*(w.stop() for w in watchers))


def test_two_thousand_watchers_leave_a_trigger_fast_and_the_agent_stream_whole(
    db_conninfo: str, tmp_path: Path
) -> None:
    db = Database(db_conninfo)
    flags = ("--max-streams", str(WATCHERS + 100))
    with _cluster(tmp_path, db_conninfo, *flags) as (coordinator, client):
        client.apply(Task(name="crowd", command=("sh", "-c", "sleep 0.5; echo crowd")))
        earlier_run = client.wait(client.trigger("crowd")[0].id, timeout=10).id
        session = db.value("SELECT connected_at FROM hydra_agents WHERE id = 'crowd-agent'")
        result = asyncio.run(_crowd_then_trigger(coordinator.address, earlier_run))

        assert result["trigger_error"] is None, f"Trigger failed: {result['trigger_error']}"
        run = db.wait_run_state(result["run_id"], {"SUCCEEDED"}, timeout=10)
        [attempt] = db.attempts(run["id"])
        started_in = (attempt["started_at"] - result["triggered_at"]).total_seconds()
        print(f"{WATCHERS} watchers: the process started {started_in:.3f}s after Trigger")
        assert started_in < START_WITHIN_S, f"the process started {started_in:.2f}s after Trigger"
        assert result["broken"] == [], f"{len(result['broken'])} watchers broke"
        assert result["missed"] == 0, f"{result['missed']} watchers never saw the run succeed"
        assert result["healthy"]
        # The agent's stream held: the same session, one connection.
        assert db.value("SELECT connected_at FROM hydra_agents WHERE id = 'crowd-agent'") == session
        log = coordinator.process.log()
        assert not [line for line in log.splitlines() if any(s in line for s in STARVED)]
        # The cluster still serves.
        assert client.wait(client.trigger("crowd")[0].id, timeout=10).state.value == "SUCCEEDED"


# --- the stream cap -----------------------------------------------------------------


async def _at_the_cap(address: str, run_id: str, cap: int) -> dict[str, Any]:
    async with _channels(address, 1) as (channel,):
        stub = run_grpc.RunServiceStub(channel)
        follow = run_pb.TailLogsRequest(run_id=run_id, follow=True)
        followers = [stub.TailLogs(follow) for _ in range(2)]
        watchers = [Watcher(channel, run_id=run_id).start() for _ in range(cap - 2)]
        await wait_until(  # a run_id watcher's first event is the run's current state
            lambda: all(w.seen for w in watchers), timeout=10, message="watchers subscribed"
        )
        refused = []
        for extra in (stub.Watch(run_pb.WatchRunsRequest()), stub.TailLogs(follow)):
            try:
                async for _ in extra:
                    break
            except grpc.aio.AioRpcError as error:
                refused.append((error.code(), error.details()))
        outputs = [b"".join([c.data async for c in f]) for f in followers]
        await wait_until(
            lambda: all(w.saw(run_id, SUCCEEDED) for w in watchers),
            timeout=10,
            message="the watchers to see the run succeed",
        )
        for watcher in watchers:
            await watcher.stop()
        # Places are given back: a new stream is served.
        again = Watcher(channel, run_id=run_id).start()
        await wait_until(
            lambda: bool(again.seen) or again.error, timeout=10, message="a new stream"
        )
        await again.stop()
        return {
            "refused": refused,
            "outputs": outputs,
            "errors": [w.error for w in watchers if w.error],
            "again": again.seen,
            "again_error": again.error,
        }


def test_past_the_stream_cap_a_stream_is_refused_naming_the_limit_and_the_others_go_on(
    db_conninfo: str, tmp_path: Path
) -> None:
    cap = 5
    with _cluster(tmp_path, db_conninfo, "--max-streams", str(cap)) as (coordinator, client):
        client.apply(Task(name="slow", command=("sh", "-c", "sleep 1.5; echo done-slow")))
        run, _ = client.trigger("slow")
        result = asyncio.run(_at_the_cap(coordinator.address, run.id, cap))

    assert len(result["refused"]) == 2, result["refused"]
    for code, details in result["refused"]:
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-streams" in details and f"at most {cap}" in details
    assert result["outputs"] == [b"done-slow\n", b"done-slow\n"]
    assert result["errors"] == []
    assert result["again"] and result["again_error"] is None


# --- a watcher that never reads -------------------------------------------------------

#: Runs created at once: more events than a watcher may have waiting (1,000) plus
#: what gRPC holds for a client that does not read.
FLOOD = 3000


async def _never_reading(address: str, client: Client) -> dict[str, Any]:
    # No BDP probing: the window of a client that never reads stays at 64 KiB.
    async with (
        _channels(address, 1, http2__bdp_probe=0) as (stuck_channel,),
        _channels(address, 1) as (channel,),
    ):
        stuck = run_grpc.RunServiceStub(stuck_channel).Watch(run_pb.WatchRunsRequest())
        reader = Watcher(channel).start()
        await _healthy(channel)
        await _healthy(stuck_channel)
        start = datetime(2026, 1, 1, tzinfo=UTC)
        created = await asyncio.to_thread(
            client.backfill, "flood", start=start, end=start + timedelta(seconds=FLOOD - 1)
        )
        ids = {r.id for r in created.created}
        await wait_until(
            lambda: ids <= reader.seen.keys(), timeout=15, message="the reader to see every run"
        )
        # The stuck stream is ended, and its place given back: two more fit under --max-streams 3.
        late: list[Watcher] = []

        async def two_more_served() -> bool:
            late.extend(
                Watcher(channel, run_id=next(iter(ids))).start() for _ in range(2 - len(late))
            )
            await wait_until(lambda: all(w.seen or w.error for w in late), timeout=5)
            for refused in [w for w in late if w.error]:
                late.remove(refused)
            return len(late) == 2

        await wait_until(two_more_served, timeout=10, interval=0.2, message="two late watchers")
        stuck_end = None
        try:
            async with asyncio.timeout(10):
                async for _ in stuck:
                    pass
        except grpc.aio.AioRpcError as error:
            stuck_end = (error.code(), error.details())
        except TimeoutError:
            stuck_end = None
        healthy = client.wait(client.trigger("healthy")[0].id, timeout=10).state.value
        await wait_until(
            lambda: any(SUCCEEDED in states for states in reader.seen.values()),
            timeout=10,
            message="the reader to see the healthy run",
        )
        for watcher in [reader, *late]:
            await watcher.stop()
        return {
            "stuck_end": stuck_end,
            "reader_error": reader.error,
            "healthy": healthy,
        }


def test_a_watcher_that_never_reads_is_ended_and_the_others_go_on(
    db_conninfo: str, tmp_path: Path
) -> None:
    with _cluster(tmp_path, db_conninfo, "--max-streams", "3") as (coordinator, client):
        # Runs no agent can take: they only make events.
        client.apply(
            Task(
                name="flood",
                command=("true",),
                triggers=[Cron(expression="* * * * * *")],
                selector={"pool": "nowhere"},
            )
        )
        client.pause("flood")  # backfilled runs only
        client.apply(Task(name="healthy", command=("true",)))
        result = asyncio.run(_never_reading(coordinator.address, client))

    assert result["stuck_end"] is not None, "the stuck stream was never ended"
    code, details = result["stuck_end"]
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "fell behind" in details
    assert result["reader_error"] is None
    assert result["healthy"] == "SUCCEEDED"


# --- concurrent unary calls -----------------------------------------------------------


async def _calls_past_the_limit(address: str, conninfo: str, limit: int) -> dict[str, Any]:
    async with _channels(address, 1) as (channel,):
        stub = task_grpc.TaskServiceStub(channel)
        async with await psycopg.AsyncConnection.connect(conninfo) as blocker:
            # Calls that list tasks now wait inside the database, each holding its place.
            await blocker.execute("LOCK TABLE hydra_task_versions IN ACCESS EXCLUSIVE MODE")
            calls = [
                asyncio.ensure_future(stub.List(task_pb.ListTasksRequest(), timeout=15))
                for _ in range(limit + 3)
            ]
            done, _ = await asyncio.wait(calls, timeout=2)
            refused = [_details(c.exception()) for c in done if c.exception() is not None]
            healthy = await _healthy(channel)
            await blocker.rollback()
        results = await asyncio.gather(*calls, return_exceptions=True)
        answered = sum(isinstance(r, task_pb.ListTasksResponse) for r in results)
        return {"refused": refused, "answered": answered, "healthy": healthy}


def _details(error: BaseException | None) -> tuple[Any, str]:
    assert isinstance(error, grpc.aio.AioRpcError), error
    return error.code(), error.details() or ""


def test_unary_calls_past_the_limit_are_refused_naming_it_and_health_still_answers(
    db_conninfo: str, tmp_path: Path
) -> None:
    limit = 2
    flags = ("--max-concurrent-rpcs", str(limit))
    with _cluster(tmp_path, db_conninfo, *flags) as (coordinator, client):
        result = asyncio.run(_calls_past_the_limit(coordinator.address, db_conninfo, limit))
        # Places are given back, and the cluster still runs work.
        client.apply(Task(name="healthy", command=("true",)))
        assert client.wait(client.trigger("healthy")[0].id, timeout=10).state.value == "SUCCEEDED"

    assert len(result["refused"]) == 3, result
    for code, details in result["refused"]:
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-concurrent-rpcs" in details and f"{limit} calls" in details
    assert result["answered"] == limit
    assert result["healthy"]
