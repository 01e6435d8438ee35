"""examples/pipeline.yaml as a user would drive it with hydractl: one ingest run
for an occurrence gives exactly one transform and one publish run, the transform
only after its file appears, with {{ ds }} and upstream outputs in the argv."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.wait import wait_for

from support.cluster import Database, cluster

EXAMPLE = Path(__file__).parents[2] / "examples" / "pipeline.yaml"
DEMO = Path("/tmp/hydra-demo/2026-11-27")


def _ctl(address: str, *args: str) -> Any:
    command = [
        sys.executable,
        "-m",
        "hydra.client.hydractl",
        "--coordinator",
        address,
        "-o",
        "json",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout) if done.stdout.strip() else None


def _runs(address: str, task: str) -> list[dict[str, Any]]:
    return list(_ctl(address, "runs", "list", "--task", task))


def test_the_pipeline_example(db_conninfo: str, tmp_path: Path) -> None:
    shutil.rmtree(DEMO, ignore_errors=True)
    db = Database(db_conninfo)
    with cluster(db_conninfo, tmp_path) as (coordinators, _):
        address = coordinators[0].address
        _ctl(address, "apply", "-f", str(EXAMPLE))
        _ctl(address, "run", "ingest", "--occurrence", "2026-11-26T15:00:00Z", "--wait")
        transform = wait_for(lambda: _runs(address, "transform"), message="a transform run")[0]
        wait_for(
            lambda: _ctl(address, "runs", "get", transform["id"])["precondition_checks"] >= 1,
            timeout=20,
            message="the file precondition to be checked",
        )
        assert _ctl(address, "runs", "get", transform["id"])["attempts"] == []
        (DEMO / "_READY").touch()
        publish = wait_for(
            lambda: [r for r in _runs(address, "publish") if r["state"] == "SUCCEEDED"],
            timeout=30,
            message="publish to succeed",
        )[0]
        published = _ctl(address, "runs", "get", publish["id"])
        transformed = _ctl(address, "runs", "get", transform["id"])
    shutil.rmtree(DEMO, ignore_errors=True)
    assert "transforming 2026-11-27: 1234 rows" in transformed["attempts"][0]["argv"][2]
    assert published["attempts"][0]["argv"] == [
        "echo",
        "publishing",
        "2026-11-27",
        "/tmp/hydra-demo/2026-11-27/clean.csv",
    ]
    for task in ("ingest", "transform", "publish"):
        assert len(db.runs(task)) == 1
