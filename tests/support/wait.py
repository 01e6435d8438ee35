"""Waiting on conditions with deadlines; tests never sleep for a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_INTERVAL_S = 0.02


def wait_for(
    predicate: Callable[[], T | None],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    interval: float = DEFAULT_INTERVAL_S,
    message: str = "condition",
) -> T:
    """Call `predicate` until it returns something truthy, and return that.

    Raises:
        AssertionError: `timeout` seconds passed first; names `message`.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message}")
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
    """Call (and await, if async) `predicate` until its result is truthy; return that.

    Raises:
        AssertionError: `timeout` seconds passed first; names `message`.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message}")
        await asyncio.sleep(interval)
