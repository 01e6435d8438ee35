"""Rendering a run's templates without stalling the coordinator.

A template that only outputs variables (``{{ ds }}``) costs what its inputs
cost and renders inline, on the event loop; a field without template syntax is
not rendered at all. Everything else (loops, calls, filters, operators) renders
in one of a few worker processes (:mod:`hydra.coordinator.render_worker`), one
request at a time, under a time limit: a thread cannot be stopped, a process
can. A worker that runs out of time is SIGKILLed and replaced, and the render
fails with a RenderError naming the limit, which fails that attempt.

Workers are started with ``exec`` (never a bare ``fork`` of a process with gRPC
threads), limit their own address space, and are stopped with the coordinator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Coroutine, Mapping, Sequence
from datetime import timedelta
from typing import Any

from hydra.coordinator.render_worker import HEADER_BYTES, body_size, encode_context, frame
from hydra.coordinator.sandbox import (
    DEFAULT_RENDER_TIMEOUT,
    MAX_FIELD_BYTES,
    WORKER_MEMORY_BYTES,
)
from hydra.coordinator.templates import (
    RenderContext,
    RenderedRun,
    RenderError,
    TemplatedField,
    needs_worker,
    render_run,
    render_text,
    templated_fields,
)
from hydra.domain import TaskSpec
from hydra.errors import HydraError
from hydra.spec import format_duration

log = logging.getLogger("hydra.coordinator.rendering")

#: Worker processes per coordinator.
RENDER_WORKERS = 2
#: How long a render waits for a free worker, at most, before giving up (its lease
#: then expires and the run is offered again, without using an attempt).
WORKER_WAIT = timedelta(seconds=5)
#: How long a new worker may take to start (import Python and Jinja2).
WORKER_START_TIMEOUT = timedelta(seconds=30)
#: Longest answer frame a worker may send: a field of MAX_FIELD_BYTES, JSON-escaped.
_MAX_ANSWER_BYTES = 6 * MAX_FIELD_BYTES + 1024
_EMPTY: Mapping[str, str] = {}


class RenderingUnavailable(HydraError):
    """No render worker is available; the run is offered again later."""

    status_code_name = "UNAVAILABLE"


class _WorkerFailed(RenderError):
    """The worker ran out of time or died: it is replaced, and the render fails."""


class RenderPool:
    """Renders runs' templates: inline what is trivially bounded, the rest in worker
    processes with a time limit. Start it before use and stop it after.

    Args:
        timeout: Time limit of one run's renders in a worker.
        workers: How many worker processes.
        memory_limit: Address-space limit of each worker, in bytes.
        worker_wait: How long a render may wait for a free worker.
    """

    def __init__(
        self,
        *,
        timeout: timedelta = DEFAULT_RENDER_TIMEOUT,
        workers: int = RENDER_WORKERS,
        memory_limit: int = WORKER_MEMORY_BYTES,
        worker_wait: timedelta = WORKER_WAIT,
    ) -> None:
        self.timeout = timeout
        self._worker_wait = worker_wait
        self._size = workers
        self._memory_limit = memory_limit
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._workers: set[_Worker] = set()
        self._replacing: set[asyncio.Task[None]] = set()
        self._starting: list[asyncio.Task[None]] = []
        self._running = False

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live workers."""
        return [worker.pid for worker in self._workers]

    async def start(self) -> None:
        """Start the workers in the background, so that a coordinator serves at once
        (starting Python and Jinja2 takes a few tenths of a second): a render that
        needs a worker meanwhile waits for the first one ready, at most worker_wait."""
        self._running = True
        self._starting = [self._in_background(self._start_one()) for _ in range(self._size)]

    async def ready(self) -> None:
        """Wait until the workers `start` began are ready."""
        await asyncio.gather(*self._starting)

    async def stop(self) -> None:
        """Kill the workers (they hold nothing worth waiting for) and reap them."""
        self._running = False
        for task in self._replacing:
            task.cancel()
        await asyncio.gather(*self._replacing, return_exceptions=True)
        await asyncio.gather(*(worker.kill() for worker in list(self._workers)))
        self._workers.clear()

    async def render(self, spec: TaskSpec, context: RenderContext) -> RenderedRun:
        """Render a run's command, env, workdir and preconditions.

        Raises:
            RenderError: the template failed, ran out of time or memory, or rendered
                too much; the message names the field and the limit.
            RenderingUnavailable: no worker became free in time (not the template's fault).
        """
        heavy = _worker_fields(spec)
        rendered = await self._render_in_worker(heavy, spec, context) if heavy else _EMPTY
        return render_run(spec, context, rendered)

    async def render_text(self, source: str, variables: Mapping[str, Any], path: str) -> str:
        """Render one template over plain JSON values (a notification's body): inline
        when it only outputs variables, else in a worker under the time limit.

        Raises:
            RenderError: as `render`, naming `path`.
            RenderingUnavailable: no worker became free in time.
        """
        if not needs_worker(source):
            return render_text(source, variables, path)
        request = frame({"text": [path, source], "variables": dict(variables)})
        values = await self._in_worker(request, [path])
        return values[path]

    async def _render_in_worker(
        self, fields: Sequence[TemplatedField], spec: TaskSpec, context: RenderContext
    ) -> dict[str, str]:
        request = frame(
            {
                "context": encode_context(context),
                "defaults": dict(spec.params),
                "fields": [list(field) for field in fields],
            }
        )
        return await self._in_worker(request, [field.path for field in fields])

    async def _in_worker(self, request: bytes, paths: Sequence[str]) -> dict[str, str]:
        worker = await self._acquire()
        try:
            values = await worker.render(request, paths, self.timeout)
        except _WorkerFailed as error:
            self._replace(worker)
            if not self._running:  # killed by stop(): not the template's fault
                raise RenderingUnavailable("the render workers stopped") from error
            raise
        except RenderError:
            self._idle.put_nowait(worker)
            raise
        except BaseException:  # cancelled mid-request: its answers would be stale
            self._replace(worker)
            raise
        self._idle.put_nowait(worker)
        return values

    async def _acquire(self) -> _Worker:
        if not self._running:
            raise RenderingUnavailable("the render workers are not running")
        try:
            async with asyncio.timeout(self._worker_wait.total_seconds()):
                return await self._idle.get()
        except TimeoutError:
            wait = format_duration(self._worker_wait)
            raise RenderingUnavailable(f"no render worker was free within {wait}") from None

    async def _spawn(self) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hydra.coordinator.render_worker",
            str(self._memory_limit),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        worker = _Worker(process)
        self._workers.add(worker)
        try:
            async with asyncio.timeout(WORKER_START_TIMEOUT.total_seconds()):
                await worker.ready()
        except BaseException:
            self._workers.discard(worker)
            await worker.kill()
            raise
        return worker

    def _replace(self, worker: _Worker) -> None:
        """Kill a worker now; reap it and start another in its place in the background."""
        worker.signal_kill()
        self._in_background(self._respawn(worker))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name="hydra-render-worker")
        self._replacing.add(task)
        task.add_done_callback(self._replacing.discard)
        return task

    async def _respawn(self, worker: _Worker) -> None:
        await worker.kill()
        self._workers.discard(worker)
        await self._start_one()

    async def _start_one(self) -> None:
        """Start a worker and make it available, trying again while it cannot start."""
        delay = 0.1
        while self._running:
            try:
                self._idle.put_nowait(await self._spawn())
                return
            except Exception:
                log.exception("cannot start a render worker; trying again in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


def _worker_fields(spec: TaskSpec) -> list[TemplatedField]:
    """The fields of a spec that render in a worker (most specs have none: checked
    first without building the fields' paths)."""
    sources = (*spec.command, *spec.plain_env.values(), spec.workdir)
    if not spec.preconditions and not any(map(needs_worker, sources)):
        return []
    return [field for field in templated_fields(spec) if needs_worker(field.source)]


class _Worker:
    """One worker process and its pipes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.pid = process.pid

    async def ready(self) -> None:
        """Wait for the worker's first frame."""
        answer = await self._read(path="render worker")
        if "ready" not in answer:
            raise _WorkerFailed("render worker", f"unexpected first message {answer!r}")

    async def render(
        self, request: bytes, paths: Sequence[str], limit: timedelta
    ) -> dict[str, str]:
        """Send one request and read an answer per field, all within ``limit``."""
        stdin = self._process.stdin
        assert stdin is not None
        values: dict[str, str] = {}
        path = paths[0]
        try:
            async with asyncio.timeout(limit.total_seconds()):
                stdin.write(request)
                await stdin.drain()
                for path in paths:
                    answer = await self._read(path)
                    if "error" in answer:
                        raise RenderError(str(answer["path"]), str(answer["error"]))
                    values[path] = str(answer["value"])
        except TimeoutError:
            reason = f"rendering exceeded its time limit of {format_duration(limit)}"
            raise _WorkerFailed(path, reason) from None
        except (ConnectionError, BrokenPipeError):
            raise _WorkerFailed(path, await self._death()) from None
        return values

    async def _read(self, path: str) -> dict[str, Any]:
        stdout = self._process.stdout
        assert stdout is not None
        try:
            size = body_size(await stdout.readexactly(HEADER_BYTES))
            if size > _MAX_ANSWER_BYTES:
                raise _WorkerFailed(path, f"the render worker sent {size:,} bytes at once")
            answer = json.loads(await stdout.readexactly(size))
        except asyncio.IncompleteReadError:
            raise _WorkerFailed(path, await self._death()) from None
        if not isinstance(answer, dict):
            raise _WorkerFailed(path, f"the render worker sent {answer!r}")
        return answer

    async def _death(self) -> str:
        """Why the worker is gone, once it is."""
        code = await self._process.wait()
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"the render worker was killed by {signal.Signals(-code).name}"
        return f"the render worker exited with code {code}"

    def signal_kill(self) -> None:
        """SIGKILL the worker (a runaway render stops burning CPU at once)."""
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()

    async def kill(self) -> None:
        """SIGKILL the worker, reap it and close its stdin (its stdout closes at the end
        of file, which its death brings)."""
        self.signal_kill()
        await self._process.wait()
        if self._process.stdin is not None:
            self._process.stdin.close()
