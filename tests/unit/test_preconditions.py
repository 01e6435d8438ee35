"""Preconditions against real processes, files and sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import functools
import http.server
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness.net import free_port
from harness.processes import is_alive
from harness.wait import wait_until
from hydra.agent import messages, preconditions, process
from hydra.agent.preconditions import (
    MAX_MESSAGE_CHARS,
    Check,
    FileCheckPool,
    UnsupportedCheck,
    evaluate,
    evaluate_all,
    one_line,
)
from hydra.domain import (
    DEFAULT_CHECK_TIMEOUT,
    MAX_CHECK_TIMEOUT,
    CommandCheck,
    FileCheck,
    HttpCheck,
    LeaseKey,
    PreconditionVerdict,
    TcpCheck,
)
from hydra.v1 import agent_service_pb2 as pb
from hydra.v1 import types_pb2

SHORT = timedelta(seconds=0.3)


async def check(precondition: Check) -> tuple[bool, str]:
    verdict = await evaluate(precondition)
    return verdict.ready, verdict.message


def sh(script: str, timeout: timedelta = DEFAULT_CHECK_TIMEOUT) -> CommandCheck:
    return CommandCheck(argv=("sh", "-c", script), timeout=timeout)


# --- an HTTP server with answers to order ----------------------------------------------


@dataclass
class Web:
    """What the test server saw, and the gate that holds ``/held`` requests."""

    port: int
    gate: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    lock: threading.Lock = field(default_factory=threading.Lock)
    entered: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    finished: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def enter(self) -> None:
        with self.lock:
            self.entered += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)

    def has_entered(self, count: int) -> bool:
        with self.lock:
            return self.entered == count

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1


def handler_for(web: Web) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/slow":
                web.finished.wait(10)
            elif self.path == "/held":
                web.enter()
                web.gate.acquire(timeout=10)
                web.leave()
            status = 503 if self.path == "/unavailable" else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

    return Handler


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that time out leave broken pipes behind; expected here


@pytest.fixture
def web() -> Iterator[Web]:
    """A ThreadingHTTPServer on 127.0.0.1: /ok 200, /unavailable 503, /slow, /held."""
    web = Web(port=0)
    server = QuietServer(("127.0.0.1", 0), handler_for(web))
    web.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield web
    web.finished.set()
    for _ in range(100):
        web.gate.release()
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
async def listening() -> AsyncIterator[int]:
    """A port on 127.0.0.1 that accepts connections."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


# --- command ----------------------------------------------------------------------------


async def test_a_command_exiting_0_is_ready() -> None:
    assert await check(CommandCheck(argv=("true",))) == (True, "exit code 0")


async def test_a_command_exiting_non_zero_is_not_ready() -> None:
    assert await check(sh("exit 3")) == (False, "exit code 3")


async def test_the_last_line_of_output_explains_the_exit_code() -> None:
    verdict = await check(sh("echo checking; echo 'partition 2024-05-01 missing' >&2; exit 1"))

    assert verdict == (False, "exit code 1: partition 2024-05-01 missing")


async def test_a_missing_program_is_not_ready_with_the_error() -> None:
    ready, message = await check(CommandCheck(argv=("/nonexistent/check",)))

    assert not ready
    assert message == "cannot start: no such file or directory: '/nonexistent/check'"


async def test_an_empty_command_is_not_ready() -> None:
    assert await check(CommandCheck(argv=())) == (False, "empty command")


async def test_a_command_timeout_kills_its_process_group(tmp_path: Path) -> None:
    child = tmp_path / "child.pid"
    script = f"sleep 1000 & echo $! > {child}; wait"
    started = time.monotonic()

    verdict = await check(sh(script, timeout=SHORT))

    assert verdict == (False, "timed out after 300ms")
    assert time.monotonic() - started < 3
    pid = int(child.read_text())
    await wait_until(lambda: not is_alive(pid), timeout=5, message=f"pid {pid} to be gone")


def group_members(pgid: int) -> list[int]:
    """The living processes of a process group, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                fields = file.read().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        if fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


@pytest.mark.parametrize("use_pidfds", [True, False], ids=["pidfds", "asyncio transport"])
async def test_a_command_check_that_times_out_leaves_no_process_of_its_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, use_pidfds: bool
) -> None:
    if use_pidfds and not process.USE_PIDFDS:
        pytest.skip("pidfds do not work here")
    monkeypatch.setattr(process, "USE_PIDFDS", use_pidfds)
    leader = tmp_path / "leader.pid"
    # A child that ignores SIGTERM, and one in a subshell: SIGKILL reaches them all.
    script = f"echo $$ > {leader}; (trap '' TERM; sleep 1000) & (sleep 1000 &) ; wait"

    verdict = await check(sh(script, timeout=SHORT))

    assert verdict == (False, "timed out after 300ms")
    pgid = int(leader.read_text())
    await wait_until(lambda: not group_members(pgid), timeout=5, message=f"group {pgid} gone")


async def test_through_pidfds_a_command_check_needs_no_thread(tmp_path: Path) -> None:
    if not process.USE_PIDFDS:
        pytest.skip("pidfds do not work here")
    started = tmp_path / "started"
    threads = set(threading.enumerate())
    evaluation = asyncio.create_task(evaluate(sh(f"touch {started}; sleep 0.2")))
    await wait_until(started.exists, timeout=5, message="the check to start")

    assert set(threading.enumerate()) <= threads
    assert (await evaluation).ready


async def test_a_command_leaves_no_process_behind(tmp_path: Path) -> None:
    child = tmp_path / "child.pid"

    verdict = await check(sh(f"sleep 1000 & echo $! > {child}; exit 0"))

    assert verdict == (True, "exit code 0")
    pid = int(child.read_text())
    await wait_until(lambda: not is_alive(pid), timeout=5, message=f"pid {pid} to be gone")


async def test_cancelling_a_command_check_kills_its_group(tmp_path: Path) -> None:
    child = tmp_path / "child.pid"
    task = asyncio.create_task(evaluate(sh(f"sleep 1000 & echo $! > {child}; wait")))
    await wait_until(lambda: child.exists() and child.read_text().strip(), timeout=5)
    pid = int(child.read_text())

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await wait_until(lambda: not is_alive(pid), timeout=5, message=f"pid {pid} to be gone")


async def test_a_command_does_not_see_the_agent_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_TOKEN", "s3cret")

    assert await check(sh('test -z "$HYDRA_TOKEN"')) == (True, "exit code 0")


# --- file -------------------------------------------------------------------------------


async def test_a_missing_file_is_not_ready(tmp_path: Path) -> None:
    path = tmp_path / "x" / "_READY"

    assert await check(FileCheck(path=str(path))) == (False, f"no such file: {path}")


async def test_an_existing_file_is_ready(tmp_path: Path) -> None:
    path = tmp_path / "_READY"
    path.touch()

    assert await check(FileCheck(path=str(path))) == (True, "modified 0s ago")


async def test_a_file_younger_than_min_age_is_not_ready(tmp_path: Path) -> None:
    path = tmp_path / "_READY"
    path.touch()
    twelve_seconds_ago = time.time() - 12
    os.utime(path, (twelve_seconds_ago, twelve_seconds_ago))

    verdict = await check(FileCheck(path=str(path), min_age=timedelta(minutes=1)))

    assert verdict == (False, "modified 12s ago; needs 1m")


async def test_a_file_older_than_min_age_is_ready(tmp_path: Path) -> None:
    path = tmp_path / "_READY"
    path.touch()
    two_minutes_ago = time.time() - 120
    os.utime(path, (two_minutes_ago, two_minutes_ago))

    verdict = await check(FileCheck(path=str(path), min_age=timedelta(minutes=1)))

    assert verdict == (True, "modified 2m ago")


class HungStat:
    """A stat that hangs (a dead NFS server) until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, path: str) -> os.stat_result:
        self.calls += 1
        self.release.wait(10)
        return os.stat(path)


async def test_hung_stats_hold_a_few_threads_then_checks_are_busy_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hung = HungStat()
    pool = FileCheckPool(workers=2, stat=hung)
    monkeypatch.setattr(preconditions, "FILE_CHECKS", pool)
    ready = FileCheck(path=str(tmp_path), timeout=SHORT)
    threads = threading.active_count()

    assert (
        await asyncio.gather(check(ready), check(ready)) == [(False, "timed out after 300ms")] * 2
    )
    started = time.monotonic()
    assert await check(ready) == (False, "file checks busy (2 stat calls have not returned)")
    assert time.monotonic() - started < 0.1  # refused at once, not queued
    assert threading.active_count() == threads + 2
    assert hung.calls == 2

    hung.release.set()
    await wait_until(lambda: pool.busy == 0, timeout=5)
    assert (await check(ready))[0]
    assert threading.active_count() == threads + 2  # the same threads, again


# --- http -------------------------------------------------------------------------------


async def test_http_200_is_ready(web: Web) -> None:
    assert await check(HttpCheck(url=web.url("/ok"))) == (True, "HTTP 200")


async def test_http_503_is_not_ready(web: Web) -> None:
    assert await check(HttpCheck(url=web.url("/unavailable"))) == (False, "HTTP 503")


async def test_a_slow_http_answer_times_out(web: Web) -> None:
    started = time.monotonic()

    verdict = await check(HttpCheck(url=web.url("/slow"), timeout=SHORT))

    assert verdict == (False, "timed out after 300ms")
    assert time.monotonic() - started < 3


async def test_http_to_a_closed_port_is_not_ready() -> None:
    verdict = await check(HttpCheck(url=f"http://127.0.0.1:{free_port()}/health"))

    assert verdict == (False, "connection refused")


async def test_a_url_that_is_not_http_is_not_ready() -> None:
    verdict = await check(HttpCheck(url="file:///etc/passwd"))

    assert verdict == (False, "not an http(s) URL: file:///etc/passwd")


async def test_a_slow_drip_answer_is_cut_off_at_the_timeout_without_a_thread() -> None:
    closed = asyncio.Event()

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        try:
            while True:  # a status line that never ends
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.05)
        except OSError:
            closed.set()

    server = await asyncio.start_server(drip, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    threads = threading.active_count()
    try:
        verdict = await check(HttpCheck(url=f"http://127.0.0.1:{port}/", timeout=SHORT))
        assert verdict == (False, "timed out after 300ms")
        assert threading.active_count() == threads
        await asyncio.wait_for(closed.wait(), 5)  # the check hung up
    finally:
        server.close()


async def test_http_redirects_are_followed(web: Web) -> None:
    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(f"HTTP/1.1 302 Found\r\nLocation: {web.url('/ok')}\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(redirect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await check(HttpCheck(url=f"http://127.0.0.1:{port}/old")) == (True, "HTTP 200")
    finally:
        server.close()


def test_a_timeout_longer_than_the_maximum_is_cut_to_it() -> None:
    message = types_pb2.Precondition(tcp=types_pb2.TcpCheck(host="h", port=1))
    message.timeout.FromTimedelta(timedelta(days=36500))
    assert messages.precondition(message).timeout == MAX_CHECK_TIMEOUT


# --- tcp --------------------------------------------------------------------------------


async def test_tcp_to_a_listening_port_is_ready(listening: int) -> None:
    verdict = await check(TcpCheck(host="127.0.0.1", port=listening))

    assert verdict == (True, f"connected to 127.0.0.1:{listening}")


async def test_tcp_to_a_closed_port_is_not_ready() -> None:
    port = free_port()

    verdict = await check(TcpCheck(host="127.0.0.1", port=port))

    assert verdict == (False, f"127.0.0.1:{port}: connection refused")


# --- any check --------------------------------------------------------------------------


async def test_a_check_that_raises_is_not_ready_and_keeps_its_message() -> None:
    verdict = await check(TcpCheck(host="127.0.0.1", port=70000))

    assert verdict == (False, "connect(): port must be 0-65535.")


async def test_an_unsupported_check_is_not_ready() -> None:
    verdict = await check(UnsupportedCheck(reason="a precondition kind this agent does not know"))

    assert verdict == (False, "a precondition kind this agent does not know")


def test_messages_are_one_short_line() -> None:
    assert one_line("exit code 1:\n  boom\tboom ") == "exit code 1: boom boom"
    assert len(one_line("x" * 1000)) == MAX_MESSAGE_CHARS


async def test_verdicts_come_in_order_with_index_and_time(tmp_path: Path) -> None:
    before = datetime.now(UTC)
    checks: list[Check] = [sh("sleep 0.2"), FileCheck(path=str(tmp_path / "none"))]

    verdicts = await evaluate_all(checks, asyncio.Semaphore(16))

    assert [(v.index, v.ready) for v in verdicts] == [(0, True), (1, False)]
    assert all(v.checked_at is not None and before <= v.checked_at for v in verdicts)


async def test_checks_run_concurrently_within_the_semaphore(web: Web) -> None:
    checks: list[Check] = [HttpCheck(url=web.url("/held")) for _ in range(4)]
    evaluation = asyncio.create_task(evaluate_all(checks, asyncio.Semaphore(2)))

    await wait_until(lambda: web.in_flight == 2, message="two checks at once")
    for count in (3, 4):
        web.gate.release()
        await wait_until(functools.partial(web.has_entered, count), message=f"check {count}")
    web.gate.release()
    web.gate.release()
    verdicts = await asyncio.wait_for(evaluation, 10)

    assert all(verdict.ready for verdict in verdicts)
    assert web.most_in_flight == 2


# --- messages ---------------------------------------------------------------------------


def test_offered_preconditions_become_checks() -> None:
    offer = pb.LeaseOffer(
        preconditions=[
            types_pb2.Precondition(command=types_pb2.CommandCheck(argv=["true"])),
            types_pb2.Precondition(file=types_pb2.FileCheck(path="/data/_READY")),
            types_pb2.Precondition(http=types_pb2.HttpCheck(url="http://h/health")),
            types_pb2.Precondition(tcp=types_pb2.TcpCheck(host="db", port=5432)),
            types_pb2.Precondition(),
        ]
    )
    offer.preconditions[1].file.min_age.FromTimedelta(timedelta(minutes=1))
    offer.preconditions[3].timeout.FromTimedelta(timedelta(seconds=2))

    checks = messages.preconditions(offer)

    assert checks == (
        CommandCheck(argv=("true",)),
        FileCheck(path="/data/_READY", min_age=timedelta(minutes=1)),
        HttpCheck(url="http://h/health"),
        TcpCheck(host="db", port=5432, timeout=timedelta(seconds=2)),
        UnsupportedCheck(reason="a precondition kind this agent does not know"),
    )


def test_verdicts_go_out_as_preconditions_checked() -> None:
    at = datetime(2024, 5, 1, 2, 30, tzinfo=UTC)
    verdicts = [
        PreconditionVerdict(index=0, ready=True, message="exit code 0", checked_at=at),
        PreconditionVerdict(index=1, ready=False, message="HTTP 503", checked_at=at),
    ]

    message = messages.preconditions_checked(LeaseKey("run-1", 7), verdicts)

    checked = message.preconditions_checked
    assert (checked.lease.run_id, checked.lease.lease_token, checked.ready) == ("run-1", 7, False)
    assert [(v.index, v.ready, v.message) for v in checked.verdicts] == [
        (0, True, "exit code 0"),
        (1, False, "HTTP 503"),
    ]
    assert checked.verdicts[1].checked_at.ToDatetime(tzinfo=UTC) == at
