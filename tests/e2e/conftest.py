"""Fixtures of the end-to-end suite: every Hydra part is a real process.

Each fixture that starts processes depends on what they use (the database, the
home directory), so pytest stops the processes before it drops or removes that.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.processes import Cluster, Processes, processes_in


@pytest.fixture
def cluster(db_conninfo: str, tmp_path: Path) -> Iterator[Cluster]:
    """A coordinator serving; every process started through it stops at the end."""
    with processes_in(tmp_path) as processes:
        yield Cluster(processes, processes.coordinator(db_conninfo), db_conninfo)


@pytest.fixture
def home_processes(hydra_home: Path, tmp_path: Path) -> Iterator[Processes]:
    """For processes that use `hydra_home`: all stopped before the directory goes."""
    with processes_in(tmp_path, home=hydra_home) as processes:
        yield processes
