"""$HYDRA_OUTPUT is bounded while it grows (issue 11, fault 8): a 100 MB write sat
in /dev/shm while the attempt ran, was refused only after it, with a reason that
read "exit 0 ... failed with exit code 0", and concurrent attempts shared one
directory. Now each attempt has a private directory of its own, removed with
it; the file's size is checked while it grows, and past 64 KiB the attempt is
killed and fails saying so."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

from harness.wait import wait_for
from hydra.agent.output import memory_backed_tmp
from hydra.client import Client, Concurrency, RunState, Task

from support.cluster import cluster

#: Writes 100 MB to $HYDRA_OUTPUT, 1 MB every 50 ms (5 s or more in all).
SLOW_FLOOD = (
    'echo "$HYDRA_OUTPUT"; i=0; '
    "while [ $i -lt 100 ]; do head -c 1000000 /dev/zero; i=$((i+1)); sleep 0.05; done "
    '> "$HYDRA_OUTPUT"; echo wrote it all'
)
MB = 1_000_000


def _first_line(client: Client, run_id: str) -> str:
    def printed() -> str | None:
        text = b"".join(chunk.data for chunk in client.tail_logs(run_id)).decode()
        return text.splitlines()[0] if "\n" in text else None

    return str(wait_for(printed, timeout=20, interval=0.02, message="the script's first line"))


def test_a_runaway_outputs_file_fails_the_attempt_while_it_runs(
    db_conninfo: str, tmp_path: Path
) -> None:
    with (
        cluster(db_conninfo, tmp_path) as (coordinators, _),
        Client(coordinators[0].address) as client,
    ):
        client.apply(Task(name="hoarder", command=("sh", "-c", SLOW_FLOOD)))
        client.apply(Task(name="healthy", command=("true",)))
        run, _ = client.trigger("hoarder")
        output_file = Path(_first_line(client, run.id))
        started = time.monotonic()
        largest = 0
        while not client.get_run(run.id).state.terminal:
            assert time.monotonic() - started < 4, "still running: the file was not checked"
            largest = max(largest, output_file.stat().st_size if output_file.exists() else 0)
            time.sleep(0.01)
        final = client.get_run(run.id)

        assert final.state is RunState.FAILED
        assert "outputs file exceeded 64 KiB" in final.reason
        assert "exit code" not in final.reason
        assert "outputs file exceeded 64 KiB" in final.attempts[0].message
        assert largest < 20 * MB  # caught within a poll or two, never 100 MB
        assert not output_file.parent.exists()  # the attempt's directory went with it
        # The cluster kept serving.
        healthy, _ = client.trigger("healthy")
        assert client.wait(healthy.id, timeout=20).state is RunState.SUCCEEDED


def test_concurrent_attempts_have_private_directories_and_dead_agents_leave_none(
    db_conninfo: str, tmp_path: Path
) -> None:
    base = Path(memory_backed_tmp() or "/tmp")
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = base / f"hydra-agent-agent-0.{dead.pid}"  # what a killed agent-0 left
    (stale / "r-1-abc").mkdir(parents=True, exist_ok=True)
    (stale / "r-1-abc" / "outputs.json").write_bytes(b"x" * 1000)
    script = 'echo "$HYDRA_OUTPUT"; sleep 1'
    try:
        with (
            cluster(db_conninfo, tmp_path) as (coordinators, _),
            Client(coordinators[0].address) as client,
        ):
            assert not stale.exists()  # removed when the agent started
            client.apply(
                Task(
                    name="pair",
                    command=("sh", "-c", script),
                    concurrency=Concurrency(max_active_runs=2),
                )
            )
            first, _ = client.trigger("pair")
            second, _ = client.trigger("pair")
            files = [Path(_first_line(client, run.id)) for run in (first, second)]
            directories = [file.parent for file in files]
            assert directories[0] != directories[1]
            for directory in directories:
                assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
            for run in (first, second):
                assert client.wait(run.id, timeout=20).state is RunState.SUCCEEDED
            assert not any(directory.exists() for directory in directories)
    finally:
        shutil.rmtree(stale, ignore_errors=True)
