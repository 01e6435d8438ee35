"""Starting `hydra web` as a real process and finding the URL it serves."""

from __future__ import annotations

import re

from harness.hydra import HYDRA
from harness.processes import Process, Processes
from harness.wait import wait_for

_SERVING = re.compile(r"hydra web: serving (\S+)")
START_TIMEOUT_S = 30.0


def start_web(
    processes: Processes, coordinator: str, *extra: str, name: str = "web"
) -> tuple[Process, str]:
    """`hydra web` on a free loopback port for ``coordinator``; returns it and its
    base URL (``http://127.0.0.1:PORT/``) once it accepts requests."""
    web = processes.start(
        name, [*HYDRA, "web", "--listen", "127.0.0.1:0", "--coordinator", coordinator, *extra]
    )
    return web, web_url(web)


def web_url(web: Process, timeout: float = START_TIMEOUT_S) -> str:
    """The base URL ``web`` printed, which it does once it accepts requests."""

    def ready() -> str | None:
        web.check_running()
        found = _SERVING.search(web.log())
        return found.group(1) if found else None

    return wait_for(ready, timeout=timeout, message=f"{web.name} serving")


def dev_web_url(dev: Process, timeout: float = START_TIMEOUT_S) -> str:
    """The base URL of the `hydra web` that `hydra dev` started."""
    return web_url(dev, timeout)
