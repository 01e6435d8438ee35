"""What every background loop of the coordinator shares: wake on an event or a
deadline, survive database outages, log failures and go on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from hydra.errors import Unavailable

log = logging.getLogger("hydra.coordinator")


def utcnow() -> datetime:
    """The current instant, aware, in UTC."""
    return datetime.now(UTC)


async def wait_event(event: asyncio.Event, seconds: float) -> None:
    """Wait until the event is set or the timeout passes, then clear it."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=max(0.0, seconds))
    event.clear()


def seconds_until(instant: datetime | None, *, cap: float) -> float:
    """Seconds from now until `instant`, at most `cap` (and `cap` when unknown)."""
    if instant is None:
        return cap
    return min(cap, max(0.0, (instant - utcnow()).total_seconds()))


async def forever(name: str, step: Callable[[], Awaitable[None]]) -> None:
    """Run `step` until cancelled; a failed step is logged and retried shortly."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Unavailable as error:
            log.warning("%s: %s; retrying", name, error)
            await asyncio.sleep(1.0)
        except Exception:
            log.exception("%s failed; retrying", name)
            await asyncio.sleep(1.0)
