"""A coordinator's stop closes everything it opened even when a step of it fails:
its render workers, its database pools and the pipes to the workers. Anything left
open would be found by the garbage collector later, far from its cause (CI failed
twice on such ResourceWarnings in an unrelated test)."""

from __future__ import annotations

import asyncio
import asyncio.unix_events
import gc
from typing import Any

import pytest

from harness.processes import is_alive
from harness.wait import wait_for
from hydra.coordinator.server import CoordinatorConfig, CoordinatorServer


def _open_pipes(loop: asyncio.AbstractEventLoop) -> list[Any]:
    """The loop's pipe transports whose pipe is still open."""
    kinds = (
        asyncio.unix_events._UnixReadPipeTransport,
        asyncio.unix_events._UnixWritePipeTransport,
    )
    return [
        o
        for o in gc.get_objects()
        if isinstance(o, kinds) and o._loop is loop and o._pipe is not None
    ]


async def _started(db_conninfo: str) -> CoordinatorServer:
    config = CoordinatorConfig(conninfo=db_conninfo, listen="127.0.0.1:0", pool_size=2)
    coordinator = CoordinatorServer(config)
    await coordinator.start()
    await coordinator._renderer.ready()
    return coordinator


async def _fails(*_: object, **__: object) -> None:
    raise RuntimeError("this step is broken")


async def _cancelled(*_: object, **__: object) -> None:
    raise asyncio.CancelledError  # a library's own cancellation, not the stop's


def _broken(*_: object, **__: object) -> None:
    raise RuntimeError("this step is broken too")


@pytest.mark.parametrize("failing", [_fails, _cancelled])
async def test_a_failed_step_of_the_stop_leaves_nothing_open(
    db_conninfo: str, monkeypatch: pytest.MonkeyPatch, failing: Any
) -> None:
    coordinator = await _started(db_conninfo)
    loop = asyncio.get_running_loop()
    workers = coordinator._renderer.worker_pids
    assert workers and _open_pipes(loop), "the render workers did not start"
    # The first steps and one in the middle fail.
    monkeypatch.setattr(coordinator._health, "enter_graceful_shutdown", failing)
    monkeypatch.setattr(coordinator._deliveries, "stop", failing)
    monkeypatch.setattr(coordinator._followers, "stop", _broken)

    await coordinator.stop(grace=0.5)

    assert all(pool.closed for pool in coordinator._pools)
    wait_for(lambda: not any(is_alive(pid) for pid in workers), timeout=10)
    await asyncio.sleep(0)  # a closed transport lets its pipe go on the next turn
    assert _open_pipes(loop) == []


async def test_a_stop_that_is_cancelled_ends_cancelled(db_conninfo: str) -> None:
    """The stop itself being cancelled is not swallowed by a step."""
    coordinator = await _started(db_conninfo)
    gate = asyncio.Event()

    async def slow(*_: object, **__: object) -> None:
        await gate.wait()

    coordinator._deliveries.stop = slow  # type: ignore[method-assign]
    stopping = asyncio.create_task(coordinator.stop(grace=0.5))
    await asyncio.sleep(0.2)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    gate.set()
    await coordinator.stop(grace=0.5)  # a second stop still closes the rest
    assert all(pool.closed for pool in coordinator._pools)
