"""Credentials: one interceptor checks every call before its handler runs."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without `authorization: Bearer <HYDRA_TOKEN>` (health checks and
    reflection excepted), with UNAUTHENTICATED, whatever the kind of the method."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        if handler is None or handler_call_details.method.startswith("/grpc."):
            return handler
        if hmac.compare_digest(str(metadata.get("authorization", "")), self._expected):
            return handler
        return _denying(handler)


def _denying(handler: Any) -> Any:
    """A handler of the same kind as `handler` that refuses the call."""

    async def deny_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong HYDRA_TOKEN")

    async def deny_streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await deny_unary(request, context)
        yield  # pragma: no cover - abort raises

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    deny = deny_streaming if handler.response_streaming else deny_unary
    return make(
        deny,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
