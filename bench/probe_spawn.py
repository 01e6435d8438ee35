"""How long spawning holds the agent's event loop: ``python -m bench.probe_spawn [ROUNDS]``.

Spawns ``/bin/true`` (stdin /dev/null, stdout and stderr into pipes, a new
session, watched by a pidfd: what the agent does per attempt) in three ways,
interleaved round by round, and prints medians per spawn:

- ``popen``: ``subprocess.Popen`` on the loop's thread (round 2's way, still
  the way for a working directory);
- ``posix_spawn``: ``os.posix_spawn`` on the loop's thread (what
  :func:`hydra.agent.process.spawn` does);
- ``thread``: the same ``os.posix_spawn`` on a spawner thread, the loop
  awaiting it (measured, not landed: bench/README.md, "Round 3").

"loop held" is the time the loop's thread is not waiting in its selector, so
busy with the spawn (and the reaping and reading that follow) or waiting for
the GIL that the helper thread holds. "parent CPU" is
the agent's CPU (all its threads, not the child's), "wall" the time from the
call to the process being watched. A batch of 16 is spawned at once, then
reaped, as a full agent would.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from hydra.agent import process
from hydra.agent.attempt import OutputStream

BATCH = 16
BATCHES = 10
ARGV = ("/bin/true",)
ENV = {"PATH": "/usr/bin:/bin"}

Spawn = Callable[[], Awaitable[process.Process]]


def _ignore(stream: OutputStream, data: bytes) -> None:
    pass


def _pipes() -> tuple[list[tuple[int, OutputStream]], tuple[int, int]]:
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    return [(out_read, OutputStream.STDOUT), (err_read, OutputStream.STDERR)], (
        out_write,
        err_write,
    )


async def _popen() -> process.Process:
    pipes, writes = _pipes()
    return process._popen_watched(ARGV, None, ENV, _ignore, pipes, writes)


async def _posix_spawn_on_loop() -> process.Process:
    pipes, writes = _pipes()
    pid, pidfd, started_at = process._posix_spawn_watchable(ARGV, ENV, *writes)
    process._close_all((), writes)
    return process._WatchedProcess(pid, pidfd, started_at, _ignore, pipes)


_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawner")


async def _posix_spawn_on_thread() -> process.Process:
    pipes, writes = _pipes()
    loop = asyncio.get_running_loop()
    spawned = await loop.run_in_executor(
        _SPAWNER, process._posix_spawn_watchable, ARGV, ENV, *writes
    )
    pid, pidfd, started_at = spawned
    process._close_all((), writes)
    return process._WatchedProcess(pid, pidfd, started_at, _ignore, pipes)


class _SelectTimer:
    """Adds up the time the loop waits in its selector: the rest it was busy."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.waited = 0.0
        selector = loop._selector  # type: ignore[attr-defined]
        select = selector.select

        def timed(timeout: float | None = None) -> object:
            began = time.perf_counter()
            try:
                return select(timeout)
            finally:
                self.waited += time.perf_counter() - began

        selector.select = timed


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _round(spawn: Spawn, timer: _SelectTimer) -> tuple[float, float, float]:
    """(loop held, parent CPU, wall) per spawn, in µs."""
    spawning = 0.0
    began_cpu, began, began_waited = _cpu(), time.perf_counter(), timer.waited
    for _ in range(BATCHES):
        batch_began = time.perf_counter()
        processes = [await spawn() for _ in range(BATCH)]
        spawning += time.perf_counter() - batch_began
        await asyncio.wait({p.exited for p in processes})
        await asyncio.wait({p.pipes_closed for p in processes})
    elapsed, cpu = time.perf_counter() - began, _cpu() - began_cpu
    n = BATCH * BATCHES
    held = elapsed - (timer.waited - began_waited)
    return 1e6 * held / n, 1e6 * cpu / n, 1e6 * spawning / n


async def main(rounds: int) -> None:
    ways: dict[str, Spawn] = {
        "popen": _popen,
        "posix_spawn": _posix_spawn_on_loop,
        "thread": _posix_spawn_on_thread,
    }
    results: dict[str, list[tuple[float, float, float]]] = {way: [] for way in ways}
    timer = _SelectTimer(asyncio.get_running_loop())
    for _ in range(rounds):
        for way, spawn in ways.items():
            results[way].append(await _round(spawn, timer))
    print(f"{rounds} rounds of {BATCH * BATCHES} spawns of {ARGV[0]}, medians per spawn:")
    print(f"{'way':<12} {'loop held':>10} {'parent CPU':>11} {'wall':>8}")
    for way, figures in results.items():
        held, cpu, wall = (statistics.median(column) for column in zip(*figures, strict=True))
        print(f"{way:<12} {held:>8.0f}µs {cpu:>9.0f}µs {wall:>6.0f}µs")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 7))
