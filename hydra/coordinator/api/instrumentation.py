"""Counts every gRPC call by method and status code, and times the unary ones.

The first interceptor, so calls refused for their credential or their load are
counted too. Only methods the server has are labels (a caller cannot add
series by inventing method names); the agents' Connect streams are counted
when they end, and not timed (they last as long as the agent's connection).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from hydra.coordinator.metrics import CoordinatorMetrics

Context = grpc.aio.ServicerContext[Any, Any]


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Records `hydra_grpc_requests_total` and `hydra_grpc_request_duration_seconds`."""

    def __init__(self, metrics: CoordinatorMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.lstrip("/")
        kind = (
            "stream" if handler.request_streaming else "unary",
            "stream" if handler.response_streaming else "unary",
        )
        name = f"{kind[0]}_{kind[1]}"
        behaviour = getattr(handler, name)
        return handler._replace(**{name: self._counted(behaviour, method, kind == ("unary",) * 2)})

    def _counted(self, behaviour: Callable[..., Any], method: str, timed: bool) -> Any:
        requests = self._metrics.grpc_requests
        duration = self._metrics.grpc_duration.labels(method) if timed else None

        def record(context: Context, began: float, error: BaseException | None) -> None:
            requests.labels(method, _code(context, error)).inc()
            if duration is not None:
                duration.observe(time.perf_counter() - began)

        if inspect.isasyncgenfunction(behaviour):

            async def streaming(request: Any, context: Context) -> AsyncIterator[Any]:
                began, error = time.perf_counter(), None
                try:
                    async for response in behaviour(request, context):
                        yield response
                except BaseException as raised:
                    error = raised
                    raise
                finally:
                    record(context, began, error)

            return streaming

        async def single(request: Any, context: Context) -> Any:
            began, error = time.perf_counter(), None
            try:
                return await behaviour(request, context)
            except BaseException as raised:
                error = raised
                raise
            finally:
                record(context, began, error)

        return single


def _code(context: Context, error: BaseException | None) -> str:
    """The call's status code name: the one set (abort included), else OK or UNKNOWN."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        return _NAMES.get(code, "UNKNOWN")
    if error is None:
        return "OK"
    return "CANCELLED" if isinstance(error, GeneratorExit | asyncio.CancelledError) else "UNKNOWN"


_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
