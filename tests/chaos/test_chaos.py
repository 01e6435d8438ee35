"""The chaos test of ``bench/chaos`` as part of the suite: a minute of killed
coordinators and agents, stopped agents and PostgreSQL restarts, with a fixed
seed, then every guarantee of docs/architecture.md on what the database recorded.

It runs ``python -m bench.chaos`` as a process of its own (that process starts
PostgreSQL, which must not happen in a process with gRPC threads) and stops it
with SIGTERM, so that it stops everything it started, should it overrun.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SEED = 1
DURATION_S = 60
#: Setup, settling and checks take about 20 s on 2 cores; this only stops a hung run.
TIMEOUT_S = 300.0
#: SIGTERM to SIGKILL: the chaos tool stops its processes and PostgreSQL meanwhile.
CLEANUP_S = 90.0


def _run_chaos(*args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``python -m bench.chaos ARGS``."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.chaos", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=TIMEOUT_S)
    except BaseException:  # a timeout, or Ctrl-C: let it clean up, then make sure
        process.send_signal(signal.SIGTERM)
        try:
            out, err = process.communicate(timeout=CLEANUP_S)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        print(out, err, sep="\n")
        raise
    return process.returncode, out, err


@pytest.mark.slow
def test_a_minute_of_chaos_loses_doubles_and_leaves_stuck_nothing(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    began = time.monotonic()
    code, out, err = _run_chaos(
        "--duration", str(DURATION_S), "--seed", str(SEED), "--json", str(report_path)
    )
    elapsed = time.monotonic() - began
    print(out)  # the table, shown by pytest when the test fails
    assert code == 0, f"bench.chaos exited {code} after {elapsed:.0f}s\n{out}\n{err[-8000:]}"
    report = json.loads(report_path.read_text())
    assert report["passed"] and report["seed"] == SEED
    assert sum(report["stats"]["actions"].values()) >= DURATION_S // 5, "too little chaos"
    assert report["stats"]["succeeded"] > 0
    assert report["stats"]["lost_attempts"] > 0, "no attempt was lost: chaos missed the work"
