"""The one retry policy for gRPC calls: reconnects and idempotent calls only.

Every retry in Hydra goes through :func:`grpc_retrying`; nothing else retries
by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import tenacity

#: Codes that mean "the call did not happen or may be repeated safely".
RETRYABLE_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


#: Codes after which a long-lived stream (the agent's) is opened again: the
#: retryable ones, plus what a transport glitch or a coordinator dying mid-stream
#: surfaces as, plus ALREADY_EXISTS (the agent's id has a live session: the
#: restarted agent gets in once its old session is known dead). A stream carries
#: no request that could be applied twice: every report on it is fenced by its
#: lease token. Everything else (UNAUTHENTICATED, PERMISSION_DENIED,
#: INVALID_ARGUMENT, UNIMPLEMENTED, ...) is a configuration problem that
#: retrying cannot fix.
RECONNECT_CODES: frozenset[grpc.StatusCode] = RETRYABLE_CODES | frozenset(
    {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ALREADY_EXISTS,
    }
)


def is_retryable(error: BaseException) -> bool:
    """True for gRPC errors whose code is in RETRYABLE_CODES, except a connection
    that TLS refused (the client's ``CallError.tls``): it fails the same way again."""
    if getattr(error, "tls", False):
        return False
    return isinstance(error, grpc.RpcError) and error.code() in RETRYABLE_CODES


def is_reconnectable(error: BaseException) -> bool:
    """True for gRPC errors whose code is in RECONNECT_CODES."""
    return isinstance(error, grpc.RpcError) and error.code() in RECONNECT_CODES


def grpc_retrying(
    *,
    max_attempts: int | None = 5,
    initial: float = 0.1,
    maximum: float = 5.0,
) -> tenacity.Retrying:
    """A Retrying for blocking code: exponential backoff with jitter."""
    return tenacity.Retrying(**_policy(max_attempts, initial, maximum))


def async_grpc_retrying(
    *,
    max_attempts: int | None = None,
    initial: float = 0.1,
    maximum: float = 5.0,
) -> tenacity.AsyncRetrying:
    """An AsyncRetrying for asyncio code: the agent's reconnect loop (RECONNECT_CODES)."""
    return tenacity.AsyncRetrying(**_policy(max_attempts, initial, maximum, is_reconnectable))


def _policy(
    max_attempts: int | None,
    initial: float,
    maximum: float,
    predicate: Callable[[BaseException], bool] = is_retryable,
) -> dict[str, Any]:
    stop = tenacity.stop_after_attempt(max_attempts) if max_attempts else tenacity.stop_never
    return {
        "retry": tenacity.retry_if_exception(predicate),
        "wait": tenacity.wait_random_exponential(multiplier=initial, max=maximum),
        "stop": stop,
        "reraise": True,
    }
