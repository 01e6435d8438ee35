"""The benchmarks still work: ``python -m bench all --smoke`` at tiny sizes.

It runs on the test session's PostgreSQL server (``--db``), in databases of
its own, and must write every benchmark's JSON and leave no process behind.
Nothing is asserted about speed: this proves the code, not Hydra's figures.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from harness.wait import wait_for

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = ("ceiling", "peer", "throughput", "latency", "scale", "failover", "history", "web")
#: Variable that marks every process of a benchmark run (bench.stack.MARKER_ENV).
MARKER_ENV = "HYDRA_BENCH_RUN"
TIMEOUT_S = 300


def _marked(marker: str) -> list[int]:
    """Live processes carrying the run's marker in their environment."""
    wanted = f"{MARKER_ENV}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if wanted in environ and state != "Z":
            found.append(int(entry.name))
    return found


def _run_smoke(db: str, results: Path, marker: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bench", "all", "--smoke", "--db", db]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env[MARKER_ENV] = marker
    process = subprocess.Popen(
        [*command, "--results-dir", str(results)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"python -m bench all --smoke ran over {TIMEOUT_S}s\n{output[-5000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, output, "")


@pytest.mark.slow
def test_every_benchmark_runs_writes_json_and_cleans_up(
    pg_admin_conninfo: str, tmp_path: Path
) -> None:
    marker = f"smoke-{uuid.uuid4().hex}"
    try:
        done = _run_smoke(pg_admin_conninfo, tmp_path, marker)
        assert done.returncode == 0, done.stdout[-5000:]
        for name in BENCHMARKS:
            result = json.loads((tmp_path / f"{name}.json").read_text())
            assert result["name"] == name
            assert result["metrics"] or result["skipped"], result
        summary = json.loads((tmp_path / "all.json").read_text())
        assert summary["failed"] == []
        assert [r["name"] for r in summary["results"]] == list(BENCHMARKS)
        wait_for(lambda: not _marked(marker), timeout=10, message="benchmark processes to exit")
    finally:
        for pid in _marked(marker):  # only if the assertion above failed
            os.kill(pid, signal.SIGKILL)
