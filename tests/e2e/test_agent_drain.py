"""SIGTERM drains a `hydra agent`: no new leases, the running attempt finishes
and counts, then the agent exits 0 by itself."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from harness.hydra import Hydractl
from harness.wait import wait_for

from support.processes import Cluster


def run(hydractl: Hydractl, run_id: str) -> dict[str, Any]:
    found: dict[str, Any] = hydractl.json("runs", "get", run_id)
    return found


def test_sigterm_finishes_the_running_attempt_takes_nothing_new_and_exits_0(
    cluster: Cluster, tmp_path: Path
) -> None:
    hydractl = cluster.hydractl
    # The attempt sleeps 3 s once the test opens the gate, so that the test, not
    # the machine's speed, decides that the agent is still busy when it looks.
    gate = tmp_path / "gate"
    script = f"while [ ! -e {gate} ]; do sleep 0.05; done; sleep 3"
    spec = tmp_path / "three.yaml"
    spec.write_text(
        f"name: three\ncommand: [sh, -c, '{script}']\nconcurrency: {{max_active_runs: 5}}\n"
    )
    hydractl.ok("apply", "-f", str(spec))
    try:
        _drain_while_busy(cluster, gate)
    finally:
        gate.touch()  # never leave the attempt waiting, whatever happened


def _drain_while_busy(cluster: Cluster, gate: Path) -> None:
    hydractl = cluster.hydractl
    draining = cluster.agent("agent-a", capacity=2, drain_grace="60s")

    first = hydractl.ok("run", "three").strip()
    hydractl.wait_run(first, "RUNNING")
    draining.signal(signal.SIGTERM)
    wait_for(
        lambda: any(
            a["id"] == "agent-a" and a["state"] == "draining"
            for a in hydractl.json("agents", "list")
        ),
        timeout=20,
        interval=0.2,
        message="agents list to show agent-a draining",
    )

    second = hydractl.ok("run", "three").strip()  # agent-a has a free slot, but drains
    gate.touch()

    def exited_while_second_queued() -> bool:
        assert run(hydractl, second)["state"] == "QUEUED", "a draining agent took a new run"
        return draining.returncode is not None

    wait_for(exited_while_second_queued, timeout=30, interval=0.2, message="agent-a to exit")
    assert draining.returncode == 0, draining.log_tail()

    done = run(hydractl, first)
    assert done["state"] == "SUCCEEDED"
    assert [(a["state"], a["agent"]) for a in done["attempts"]] == [("SUCCEEDED", "agent-a")]
    assert run(hydractl, second)["state"] == "QUEUED"
    assert "agent-a" not in [a["id"] for a in hydractl.json("agents", "list")]
    [gone] = [a for a in hydractl.json("agents", "list", "--all") if a["id"] == "agent-a"]
    assert gone["state"] == "disconnected"

    cluster.agent("agent-b")
    finished = hydractl.wait_run(second, "SUCCEEDED", "FAILED", "CANCELLED")
    assert [(a["state"], a["agent"]) for a in finished["attempts"]] == [("SUCCEEDED", "agent-b")]
