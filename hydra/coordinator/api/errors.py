"""Turns domain errors into gRPC statuses at the edge, in one place."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from hydra.errors import HydraError

log = logging.getLogger("hydra.coordinator.api")

Request = TypeVar("Request")
Response = TypeVar("Response")
Servicer = TypeVar("Servicer")
Context = grpc.aio.ServicerContext[Any, Any]


def status_of(error: HydraError) -> grpc.StatusCode:
    """The gRPC status code an error travels as."""
    return getattr(grpc.StatusCode, error.status_code_name, grpc.StatusCode.UNKNOWN)


def unary(
    method: Callable[[Servicer, Request, Context], Awaitable[Response]],
) -> Callable[[Servicer, Request, Context], Awaitable[Response]]:
    """Wrap a unary handler: HydraError -> its status; anything else -> INTERNAL, logged."""

    @functools.wraps(method)
    async def handler(self: Servicer, request: Request, context: Context) -> Response:
        try:
            return await method(self, request, context)
        except HydraError as error:
            await context.abort(status_of(error), error.message)
        except Exception:
            log.exception("%s failed", method.__qualname__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see coordinator log")
        raise AssertionError("unreachable")  # pragma: no cover - abort raises

    return handler


def streaming(
    method: Callable[[Servicer, Request, Context], AsyncIterator[Response]],
) -> Callable[[Servicer, Request, Context], AsyncIterator[Response]]:
    """Wrap a server-streaming handler the same way."""

    @functools.wraps(method)
    async def handler(
        self: Servicer, request: Request, context: Context
    ) -> AsyncIterator[Response]:
        try:
            async for item in method(self, request, context):
                yield item
        except HydraError as error:
            await context.abort(status_of(error), error.message)
        except Exception:
            log.exception("%s failed", method.__qualname__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see coordinator log")

    return handler
