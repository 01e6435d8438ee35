"""Waiting on conditions with deadlines: nothing here sleeps for a fixed time
and then hopes."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_INTERVAL_S = 0.02


class HarnessError(AssertionError):
    """A process of the harness exited, or did not become ready.

    An AssertionError, so that a test fails on it as on any assertion.
    """


class WaitTimeout(HarnessError):
    """A condition did not hold before its deadline."""


def wait_for(
    predicate: Callable[[], T | None],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    interval: float = DEFAULT_INTERVAL_S,
    message: str = "condition",
    not_yet: tuple[type[Exception], ...] = (),
) -> T:
    """Call `predicate` until it returns something truthy, and return that.

    Args:
        not_yet: exceptions of `predicate` that mean "not yet" (a database
            that is restarting, say) rather than failure.

    Raises:
        WaitTimeout: `timeout` seconds passed first; names `message`.
    """
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(*not_yet):
            result = predicate()
            if result:
                return result
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {message}")
        time.sleep(interval)


@overload
async def wait_until(
    predicate: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = ...,  # noqa: ASYNC109  # the same signature as wait_for
    interval: float = ...,
    message: str = ...,
) -> T: ...


@overload
async def wait_until(
    predicate: Callable[[], T | None],
    *,
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    message: str = ...,
) -> T: ...


async def wait_until(
    predicate: Callable[[], object],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,  # noqa: ASYNC109
    interval: float = DEFAULT_INTERVAL_S,
    message: str = "condition",
) -> object:
    """`wait_for` inside an event loop: `predicate` may be async, and the wait
    yields to the loop.

    Raises:
        WaitTimeout: `timeout` seconds passed first; names `message`.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {message}")
        await asyncio.sleep(interval)
