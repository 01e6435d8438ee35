"""Server-streaming RPCs over HTTP: server-sent events, or NDJSON (docs/http-api.md).

The HTTP status is decided before the first byte: the call's initial metadata
(or its failure) is awaited, so a refused Watch is a 401/403/404 like any call.
When the client goes away the gRPC call is cancelled at once, even while the
stream is idle, so no watcher outlives its reader on the coordinator.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import grpc
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from hydra.web.endpoints import Endpoint
from hydra.web.http_errors import api_error, from_rpc_error
from hydra.web.json_mapping import to_json
from hydra.web.state import WebState

NDJSON = "application/x-ndjson"
EVENT_STREAM = "text/event-stream"


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Format:
    """How one message, the failure that ends a stream, and its normal end are written."""

    media_type: str
    message: Callable[[dict[str, Any]], str]
    error: Callable[[dict[str, Any]], str]
    end: str


#: An event per message (``data:`` only, so EventSource's onmessage gets it); an
#: ``error`` event carrying the error body; an ``end`` event, after which a
#: browser should close its EventSource rather than reconnect.
SSE = _Format(
    media_type=EVENT_STREAM,
    message=lambda value: f"data: {_compact(value)}\n\n",
    error=lambda body: f"event: error\ndata: {_compact(body)}\n\n",
    end="event: end\ndata: {}\n\n",
)
#: A line per message, ``{"result": …}``; a last line ``{"error": …}`` on failure
#: (grpc-gateway's shape, so a message field can never be mistaken for an error).
NDJSON_FORMAT = _Format(
    media_type=NDJSON,
    message=lambda value: _compact({"result": value}) + "\n",
    error=lambda body: _compact(body) + "\n",
    end="",
)


def stream_format(accept: str) -> _Format:
    """NDJSON when the client asks for it, server-sent events otherwise."""
    return NDJSON_FORMAT if NDJSON in accept.lower() else SSE


async def respond(
    state: WebState, endpoint: Endpoint, message: Message, *, token: str | None, request: Request
) -> StreamingResponse:
    """Open the stream; raises ApiError if the coordinator refuses it."""
    call = state.backend.open_stream(endpoint.service, endpoint.method.name, message, token=token)
    try:
        await _opened(call, request)
        if call.done():
            code = await call.code()
            if code != grpc.StatusCode.OK:
                raise api_error(code.name, await call.details() or code.name)
    except BaseException:
        call.cancel()
        raise
    output = stream_format(request.headers.get("accept", ""))
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return _EventStream(_written(call, output), media_type=output.media_type, headers=headers)


async def _opened(call: Any, request: Request) -> None:
    """Wait for the call's initial metadata (a TailLogs sends it with its first
    chunk), cancelling the call if the client goes away first."""
    async with anyio.create_task_group() as group:

        async def client_left() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass  # the (empty or already read) request body
            call.cancel()

        group.start_soon(client_left)
        await call.initial_metadata()
        group.cancel_scope.cancel()


async def _written(call: Any, output: _Format) -> AsyncIterator[str]:
    try:
        async for message in call:
            yield output.message(to_json(message))
        yield output.end
    except grpc.aio.AioRpcError as error:
        yield output.error(from_rpc_error(error).body())
    finally:
        call.cancel()


class _EventStream(StreamingResponse):
    """A streaming response that always listens for the client's disconnect.

    Starlette does so only for ASGI servers older than spec 2.4; relying on a
    failed write instead would leave an idle Watch open until its next event.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def stream() -> None:
                await self.stream_response(send)
                group.cancel_scope.cancel()

            group.start_soon(stream)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()
