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
    """A handler that refuses the call without reading its request.

    It takes the request as a stream whatever the method's kind (the wire is the
    same), and never reads it: gRPC then neither receives nor parses the body, so
    an unauthenticated caller cannot make the coordinator hold large requests.
    """

    async def deny_unary(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong HYDRA_TOKEN")

    async def deny_streaming(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await deny_unary(requests, context)
        yield  # pragma: no cover - abort raises

    if handler.response_streaming:
        make, deny = grpc.stream_stream_rpc_method_handler, deny_streaming
    else:
        make, deny = grpc.stream_unary_rpc_method_handler, deny_unary
    return make(deny, request_deserializer=_unread, response_serializer=handler.response_serializer)


def _unread(data: bytes) -> None:
    """Never called for a refused call (its request is not read); parses nothing if it were."""
