"""``posix_spawn`` starts a program as ``Popen`` did: descriptors, PATH, errors, signals.

:func:`hydra.agent.process.spawn` starts most processes with ``os.posix_spawn``
(cheaper for the agent's loop), and with ``Popen`` when a working directory is
set. Each test here holds the new way to what ``Popen`` gives, by running the
same program both ways.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path

import grpc
import pytest

from hydra.agent import process, spawning
from hydra.agent.attempt import OutputStream

pytestmark = pytest.mark.skipif(not process.USE_PIDFDS, reason="pidfds do not work here")

LIST_FDS = (
    sys.executable,
    "-I",
    "-S",
    "-c",
    "import os; print(sorted(os.listdir('/proc/self/fd')))",
)


class Output:
    def __init__(self) -> None:
        self.data = bytearray()

    def add(self, stream: OutputStream, data: bytes) -> None:
        self.data += data


async def run(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None
) -> str:
    output = Output()
    child = await process.spawn(
        argv, cwd=cwd, env=env or dict(os.environ), on_output=output.add, stderr_to_stdout=True
    )
    await asyncio.wait({child.exited, child.pipes_closed})
    child.close()
    assert child.returncode == 0, output.data
    return output.data.decode()


def popen_output(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> str:
    done = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=env or dict(os.environ),
        start_new_session=True,
        check=True,
    )
    return done.stdout.decode()


@pytest.fixture
def inherited_fd(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """An inheritable descriptor, as the agent may have been started with."""
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    monkeypatch.setattr(spawning, "_inherited_fds_kept_back", False)  # looked for once
    yield write_end
    os.close(read_end)
    os.close(write_end)


@pytest.fixture
async def grpc_connection() -> AsyncIterator[grpc.aio.Channel]:
    """A live gRPC connection on 127.0.0.1: gRPC's sockets, epoll and eventfds."""
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    await asyncio.wait_for(channel.channel_ready(), 10)
    yield channel
    await channel.close()
    await server.stop(None)


async def test_a_child_gets_only_0_1_and_2_of_all_the_agent_holds(
    tmp_path: Path, inherited_fd: int, grpc_connection: grpc.aio.Channel
) -> None:
    token_file = tmp_path / "agent.token"
    token_file.write_text("secret\n")
    sleeper = await process.spawn(  # its pipes and pidfd are open meanwhile
        ("sleep", "60"), cwd=None, env=dict(os.environ), on_output=Output().add
    )
    try:
        with token_file.open() as token:
            held = set(os.listdir("/proc/self/fd"))
            assert str(token.fileno()) in held and str(inherited_fd) in held

            listed = await run(LIST_FDS)
    finally:
        sleeper.close()
        await asyncio.wait({sleeper.exited})

    assert listed == "['0', '1', '2', '3']\n"  # 3: the listing's own


async def test_a_workdir_through_popen_gets_only_0_1_and_2_too(
    tmp_path: Path, inherited_fd: int
) -> None:
    assert await run(LIST_FDS, cwd=str(tmp_path)) == "['0', '1', '2', '3']\n"


async def test_the_program_is_found_on_the_path_of_its_environment(tmp_path: Path) -> None:
    program = tmp_path / "only-here"
    program.write_text("#!/bin/sh\necho found\n")
    program.chmod(0o755)
    env = {"PATH": f"/nonexistent:{tmp_path}"}

    assert await run(("only-here",), env=env) == "found\n"
    assert popen_output(("only-here",), env=env) == "found\n"


async def test_not_on_the_path_of_its_environment_is_not_found_even_on_the_agents() -> None:
    for way in ("spawn", "popen"):
        with pytest.raises(FileNotFoundError) as raised:
            if way == "spawn":
                await run(("sh", "-c", "true"), env={"PATH": "/nonexistent"})
            else:
                popen_output(("sh", "-c", "true"), env={"PATH": "/nonexistent"})
        assert str(raised.value) == "[Errno 2] No such file or directory: 'sh'"


def not_executable(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "prog"
    path.parent.mkdir(exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o644)
    no_interpreter = path.with_name("no-shebang")
    no_interpreter.write_bytes(b"\x7fELF, not really")
    no_interpreter.chmod(0o755)
    return path


@pytest.mark.parametrize(
    ("argv", "path"),
    [
        (("nowhere-at-all",), "{tmp}/bin:/nonexistent"),
        (("/nonexistent/program",), "/usr/bin"),
        (("prog",), "{tmp}/bin"),  # found, not executable: EACCES
        (("prog",), "{tmp}/bin:/nonexistent"),  # the first error that is not ENOENT
        (("prog",), "/nonexistent:{tmp}/bin/prog"),  # ENOTDIR last
        (("bin",), "{tmp}"),  # a directory: EACCES
        (("{tmp}/bin/prog",), "/usr/bin"),
        (("./relative-missing",), "/usr/bin"),
        (("no-shebang",), "{tmp}/bin"),  # ENOEXEC: no shell is tried in its place
    ],
)
async def test_a_program_that_cannot_start_raises_what_popen_raises(
    tmp_path: Path, argv: tuple[str, ...], path: str
) -> None:
    not_executable(tmp_path)
    argv = tuple(arg.format(tmp=tmp_path) for arg in argv)
    env = {"PATH": path.format(tmp=tmp_path)}
    with pytest.raises(OSError) as by_popen:
        popen_output(argv, env=env)

    with pytest.raises(OSError) as by_spawn:
        await run(argv, env=env)

    assert type(by_spawn.value) is type(by_popen.value)
    assert str(by_spawn.value) == str(by_popen.value)
    assert by_spawn.value.filename == argv[0]


async def test_the_signal_mask_and_ignored_signals_are_popens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As in the agent: handlers for SIGTERM and SIGINT, SIGPIPE ignored (Python's default).
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: None)
    status = ("cat", "/proc/self/status")
    try:
        spawned = await run(status)
        popened = popen_output(status)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)

    assert signal_sets(spawned) == signal_sets(popened)
    assert signal.SIGPIPE not in signal_sets(spawned)["SigIgn"]  # so that `yes | head` ends


def signal_sets(status: str) -> dict[str, set[int]]:
    """The blocked and the ignored signals of a ``/proc/PID/status``, glibc's own left out.

    glibc's ``posix_spawn`` leaves the two signals it keeps for itself (32 and
    33, below ``SIGRTMIN``) ignored in the child: a C library installs its own
    handlers for them at start, and they are not in ``signal.valid_signals()``.
    """
    sets: dict[str, set[int]] = {}
    valid = signal.valid_signals()
    for line in status.splitlines():
        name, _, mask = line.partition(":\t")
        if name in ("SigBlk", "SigIgn"):
            bits = int(mask, 16)
            sets[name] = {n for n in range(1, 65) if bits >> (n - 1) & 1 and n in valid}
    return sets


async def test_a_child_leads_a_session_of_its_own_with_stdin_from_dev_null() -> None:
    script = "ps -o sid= -p $$; echo $$; readlink /proc/$$/fd/0"
    sid, pid, stdin = (await run(("sh", "-c", script))).split()

    assert (sid, stdin) == (pid, "/dev/null")
