"""The event loop Hydra's daemons run on: uvloop where it is installed, else asyncio's.

``hydra coordinator``, ``hydra agent`` and ``hydra dev`` run their main coroutine
through :func:`run`. uvloop (libuv under asyncio's API) works with grpc.aio and
psycopg and costs less CPU per run: with ``python -m bench throughput`` on two
cores it took a sixth less CPU per 1,000 runs of ``/bin/true`` than asyncio's own
loop (bench/README.md, "Round 5"). ``HYDRA_EVENT_LOOP=asyncio`` chooses asyncio's
loop (to rule uvloop out when chasing a problem); ``uvloop`` insists on uvloop.

Code that needs a clock finer than a millisecond uses ``time.monotonic()``, not
``loop.time()``: uvloop's counts whole milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from hydra import config
from hydra.errors import InvalidArgument

T = TypeVar("T")

log = logging.getLogger("hydra")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the loop HYDRA_EVENT_LOOP chooses (said in the log)."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        log.info("event loop: %s", _name(runner.get_loop()))
        return runner.run(main)


def _name(loop: asyncio.AbstractEventLoop) -> str:
    module = type(loop).__module__.split(".")[0]
    return "uvloop" if module == "uvloop" else "asyncio"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None for asyncio's own loop.

    Raises:
        InvalidArgument: HYDRA_EVENT_LOOP is neither ``uvloop`` nor ``asyncio``,
            or asks for uvloop where it is not installed.
    """
    choice = config.event_loop()
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise InvalidArgument(
                "uvloop is not installed (pip install uvloop)", path="HYDRA_EVENT_LOOP"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
