"""Helpers for tests that watch the attempts' processes through /proc."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator

from harness.processes import is_alive
from harness.wait import wait_until


def processes_with_run_id(prefix: str) -> list[int]:
    """Living processes whose environment has a HYDRA_RUN_ID starting with ``prefix``."""
    marker = f"HYDRA_RUN_ID={prefix}".encode()
    with os.scandir("/proc") as entries:
        pids = [int(entry.name) for entry in entries if entry.name.isdigit()]
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as file:
                environ = file.read().split(b"\0")
        except OSError:
            continue
        if any(item.startswith(marker) for item in environ) and is_alive(pid):
            found.append(pid)
    return found


def unique_run_id() -> Iterator[str]:
    """For a fixture: yields a run id prefix unique to the test, then kills every
    process still carrying it and fails the test if there was any."""
    prefix = f"test-{uuid.uuid4().hex}"
    yield prefix
    strays = processes_with_run_id(prefix)
    for pid in strays:
        os.kill(pid, signal.SIGKILL)
    assert not strays, f"processes left running: {strays}"


async def eventually(condition: Callable[[], object], within: float = 5.0) -> None:
    """`harness.wait.wait_until` with the short default the unit tests want."""
    await wait_until(condition, timeout=within)
