"""The Procrastinate side of the peer benchmark: one app, one task, one worker.

The task runs ``/bin/true`` with an asyncio subprocess, as a Hydra agent does,
and, when given a ``key``, appends ``<key>\\t<time.time()>`` to the file named
by ``BENCH_PEER_START_LOG`` right after the process is spawned (where a Hydra
agent takes ``started_at``).

Run as ``python -m bench.peer_worker --conninfo ... --concurrency 16``; it
works until SIGTERM (or ``--max-seconds``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time

import procrastinate

TASK_NAME = "bench_true"
START_LOG_ENV = "BENCH_PEER_START_LOG"


def build_app(conninfo: str, *, pool_size: int) -> procrastinate.App:
    """The app, with the task registered, on a psycopg pool of `pool_size`."""
    connector = procrastinate.PsycopgConnector(
        conninfo=conninfo, min_size=min(4, pool_size), max_size=pool_size
    )
    app = procrastinate.App(connector=connector)
    app.task(name=TASK_NAME)(run_true)
    return app


async def run_true(key: int = -1) -> None:
    """Run ``/bin/true``; record the spawn time when `key` is given."""
    process = await asyncio.create_subprocess_exec("/bin/true")
    if key >= 0:
        _record_start(key, time.time())
    await process.wait()


def _record_start(key: int, started: float) -> None:
    path = os.environ.get(START_LOG_ENV)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{key}\t{started:.6f}\n".encode())
    finally:
        os.close(fd)


async def _work(conninfo: str, concurrency: int, max_seconds: float) -> None:
    app = build_app(conninfo, pool_size=concurrency + 4)
    async with app.open_async():
        worker = asyncio.create_task(
            app.run_worker_async(concurrency=concurrency, install_signal_handlers=True)
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(worker), max_seconds)
        if not worker.done():
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker


def main() -> None:
    """Run a worker until SIGTERM or ``--max-seconds``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conninfo", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()
    asyncio.run(_work(args.conninfo, args.concurrency, args.max_seconds))


if __name__ == "__main__":
    main()
