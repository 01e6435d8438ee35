"""The run page: state, attempts, verdicts, outputs, the log; live while the
run is active (server-sent events fed by RunService.Watch and TailLogs)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import grpc
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from hydra.domain import Run, RunState
from hydra.v1 import run_service_pb2 as run_pb
from hydra.web.ui.logtext import LogPiece, log_pieces
from hydra.web.ui.pages import Page, Ui, endpoint, see_other
from hydra.wire import run_from_proto

#: A quiet stream says something this often, so that a closed page ends its streams.
KEEP_ALIVE_S = 15.0
TERMINAL = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.SKIPPED})


def routes(ui: Ui) -> list[BaseRoute]:
    return [
        Route("/runs/{id}", endpoint(ui, _run), methods=["GET"]),
        Route("/runs/{id}/events", endpoint(ui, _events), methods=["GET"]),
        Route("/runs/{id}/retry", endpoint(ui, _retry), methods=["POST"]),
        Route("/runs/{id}/cancel", endpoint(ui, _cancel), methods=["POST"]),
    ]


async def _get(page: Page, run_id: str) -> Run:
    got = await page.call("RunService", "Get", run_pb.GetRunRequest(id=run_id))
    return run_from_proto(got.run)


async def _run(page: Page) -> Response:
    run = await _get(page, page.request.path_params["id"])
    live = run.state not in TERMINAL
    pieces = [] if live else await _stored_log(page, run.id)
    return page.render("run.html", run=run, live=live, pieces=pieces)


async def _stored_log(page: Page, run_id: str) -> list[LogPiece]:
    request = run_pb.TailLogsRequest(run_id=run_id)
    return log_pieces([chunk async for chunk in page.stream("RunService", "TailLogs", request)])


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


async def _events(page: Page) -> Response:
    """``run`` events (the summary, rendered) on every change, ``log`` events with
    new output, ``end`` once the run is terminal and its output complete."""
    run_id = page.request.path_params["id"]
    await _get(page, run_id)  # NOT_FOUND as a page, not as a stream
    return StreamingResponse(
        _stream(page, run_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(page: Page, run_id: str) -> AsyncIterator[str]:
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    feeds = [asyncio.create_task(feed(page, run_id, queue)) for feed in (_watch, _logs)]
    try:
        yield ": live\n\n"
        ended = 0
        while ended < len(feeds):
            try:
                item = await asyncio.wait_for(queue.get(), KEEP_ALIVE_S)
            except TimeoutError:
                yield ": keep-alive\n\n"  # a browser gone away is found out at this write
                continue
            if item is None:
                ended += 1
            else:
                yield item
        yield _event("end", {})
    finally:
        for task in feeds:
            task.cancel()


async def _watch(page: Page, run_id: str, queue: asyncio.Queue[str | None]) -> None:
    """The run's summary each time it changes (the first event is its state now)."""
    request = run_pb.WatchRunsRequest(run_id=run_id)

    async def events() -> AsyncIterator[str]:
        async for _ in page.stream("RunService", "Watch", request):
            run = await _get(page, run_id)  # with its attempts, which events leave out
            html = page.ui.templates.get_template("_run_summary.html").render(
                run=run, session=page.session, live=run.state not in TERMINAL
            )
            yield _event("run", {"html": html, "state": str(run.state)})
            if run.state in TERMINAL:
                return

    await _feed(events(), queue)


async def _logs(page: Page, run_id: str, queue: asyncio.Queue[str | None]) -> None:
    """New output as it is stored, until the run is terminal."""
    request = run_pb.TailLogsRequest(run_id=run_id, follow=True)

    async def events() -> AsyncIterator[str]:
        async for chunk in page.stream("RunService", "TailLogs", request):
            for piece in log_pieces([chunk]):
                yield _event("log", piece.json())

    await _feed(events(), queue)


async def _feed(events: AsyncIterator[str], queue: asyncio.Queue[str | None]) -> None:
    """Every event into ``queue``, a ``problem`` event if the call fails, then None."""
    try:
        async for event in events:
            await queue.put(event)
    except grpc.aio.AioRpcError as error:
        await queue.put(_event("problem", {"message": f"{error.code().name}: {error.details()}"}))
    await queue.put(None)


async def _retry(page: Page) -> Response:
    run_id = page.request.path_params["id"]
    await page.call("RunService", "Retry", run_pb.RetryRunRequest(id=run_id))
    return see_other(f"/runs/{quote(run_id)}")


async def _cancel(page: Page) -> Response:
    run_id = page.request.path_params["id"]
    reason = f"cancelled from the web UI by {page.session.name or 'anonymous'}"
    await page.call("RunService", "Cancel", run_pb.CancelRunRequest(id=run_id, reason=reason))
    return see_other(f"/runs/{quote(run_id)}")
