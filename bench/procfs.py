"""What the benchmarks read from /proc: memory, CPU time, environments, load."""

from __future__ import annotations

import contextlib
import math
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ProcError(RuntimeError):
    """A process has no such reading (it is gone, or not Linux)."""


def rss_kib(pid: int) -> int:
    """Resident set size of a process (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ProcError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far (utime + stime), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def tree_cpu_seconds(root: int) -> float:
    """CPU time of a process and its children so far (PostgreSQL's postmaster and its
    backends): each live child's, the root's, and that of the children it has reaped."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        pid, parent = int(entry.name), int(fields[1])
        if pid == root:
            total += sum(int(f) for f in fields[11:15]) / _CLOCK_TICKS
        elif parent == root:
            total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return total


def parent_pid(pid: int) -> int:
    """The parent of a process."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def pids_with_env(name: str, value: str) -> list[int]:
    """Live processes whose environment has ``name=value`` (the caller left out)."""
    wanted = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def kill_pids(pids: Sequence[int]) -> None:
    """SIGKILL each process (and the process group it leads, if it leads one)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """How busy all cores were between two :func:`cpu_jiffies` readings, in %."""
    total = after[1] - before[1]
    return 100 * (after[0] - before[0]) / total if total else math.nan


def machine() -> dict[str, Any]:
    """What the benchmarks ran on: cores, memory, CPU model, load."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "cpu_model": cpu,
        "load_average": os.getloadavg(),
    }
