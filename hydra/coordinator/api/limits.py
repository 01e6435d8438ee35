"""Load limits: one interceptor caps the streams and the concurrent unary calls
of a coordinator, so that no crowd of clients can take all of it.

Server-streaming calls (Watch, TailLogs) count against ``max_streams``; past it
a new one is refused at once. Unary calls count against
``max_concurrent_rpcs``; past it a call waits up to RPC_WAIT_SECONDS for a place,
then is refused. Both refusals are RESOURCE_EXHAUSTED, naming the limit. The
agents' Connect streams (bidirectional) and gRPC's own services (health,
reflection) are never counted: a crowd of clients must not keep an agent or a
health check out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

Context = grpc.aio.ServicerContext[Any, Any]

#: How long a unary call past the limit waits for a place before it is refused.
RPC_WAIT_SECONDS = 1.0


class LoadLimits(grpc.aio.ServerInterceptor):
    """Caps streams and concurrent unary calls (see the module's docstring)."""

    def __init__(self, *, max_streams: int, max_concurrent_rpcs: int) -> None:
        self.max_streams = max_streams
        self.max_concurrent_rpcs = max_concurrent_rpcs
        #: Server-streaming calls open now.
        self.streams = 0
        self._calls = asyncio.Semaphore(max_concurrent_rpcs)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith("/grpc."):
            return handler
        if handler.request_streaming:  # the agents' Connect
            return handler
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._counted_stream(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            self._limited_call(handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _counted_stream(
        self, behaviour: Callable[[Any, Context], AsyncIterator[Any]]
    ) -> Callable[[Any, Context], AsyncIterator[Any]]:
        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            if self.streams >= self.max_streams:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"too many streams: this coordinator serves at most {self.max_streams} "
                    "Watch and TailLogs streams at once (--max-streams, HYDRA_MAX_STREAMS); "
                    "close one, or try again later or on another coordinator",
                )
            self.streams += 1
            try:
                async for response in behaviour(request, context):
                    yield response
            finally:
                self.streams -= 1

        return stream

    def _limited_call(
        self, behaviour: Callable[[Any, Context], Awaitable[Any]]
    ) -> Callable[[Any, Context], Awaitable[Any]]:
        async def call(request: Any, context: Context) -> Any:
            try:
                await asyncio.wait_for(self._calls.acquire(), RPC_WAIT_SECONDS)
            except TimeoutError:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"coordinator busy: {self.max_concurrent_rpcs} calls already in progress "
                    "(--max-concurrent-rpcs, HYDRA_MAX_CONCURRENT_RPCS); try again",
                )
            try:
                return await behaviour(request, context)
            finally:
                self._calls.release()

        return call
