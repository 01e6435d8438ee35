"""The executor runs real processes: exit codes, output, environment, kills, outputs.

Every test that runs processes runs twice: watched through pidfds, and
through asyncio's subprocess transport (the way where pidfds do not work).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar

import pytest

from harness.processes import is_alive
from hydra.agent import process
from hydra.agent.attempt import AttemptResult, AttemptSpec, OutputStream, StreamTail
from hydra.agent.executor import (
    PIPE_DRAIN_SECONDS,
    Execution,
    attempt_environment,
)
from hydra.agent.output import (
    OutputBatcher,
    OutputRecorder,
    OutputsDirectory,
    OutputsError,
    memory_backed_tmp,
    read_outputs,
)
from hydra.domain import MAX_OUTPUT_TAIL, AttemptOutcome, OutputBudget, output_budget

from support.proc import eventually, processes_with_run_id, unique_run_id

PIDFDS = "pidfds"
TRANSPORT = "asyncio transport"

#: For tests of what only one way of watching processes does.
only_through_pidfds = pytest.mark.parametrize("run_id", [PIDFDS], indirect=True)
only_through_transport = pytest.mark.parametrize("run_id", [TRANSPORT], indirect=True)


@pytest.fixture(params=[PIDFDS, TRANSPORT])
def run_id(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A run id unique to the test; no process carrying it may outlive the test.

    Tests that run processes take it, so each runs both ways: through pidfds
    (skipped where they do not work), and through asyncio's transport with its
    default child watcher.
    """
    if request.param == PIDFDS and not process.USE_PIDFDS:
        pytest.skip("pidfds do not work here")
    monkeypatch.setattr(process, "USE_PIDFDS", request.param == PIDFDS)
    yield from unique_run_id()


@pytest.fixture
def outputs() -> Iterator[OutputsDirectory]:
    """The agent's outputs directory: every attempt must have removed its file by the end."""
    directory = OutputsDirectory()
    yield directory
    left = files_in(directory)
    directory.close()
    assert not left, f"$HYDRA_OUTPUT files left behind: {left}"


def files_in(directory: OutputsDirectory) -> list[str]:
    """The names in the outputs directory (none before it is made)."""
    return sorted(os.listdir(directory.path)) if directory.path else []


class Recorder:
    """Collects output batches as the executor hands them over."""

    def __init__(self) -> None:
        self.batches: list[tuple[OutputStream, bytes, float]] = []

    def __call__(self, stream: OutputStream, data: bytes) -> bool:
        self.batches.append((stream, data, time.monotonic()))
        return True

    def text(self, stream: OutputStream) -> str:
        return b"".join(data for s, data, _ in self.batches if s is stream).decode()


def spec(run_id: str, *argv: str, **fields: object) -> AttemptSpec:
    defaults: dict[str, object] = {
        "task": "demo.task",
        "attempt": 1,
        "kill_grace": timedelta(seconds=0.5),
    }
    return AttemptSpec(run_id=run_id, argv=argv, **(defaults | fields))  # type: ignore[arg-type]


def sh(script: str) -> tuple[str, ...]:
    return ("sh", "-c", script)


async def run(
    outputs: OutputsDirectory, attempt: AttemptSpec, recorder: Recorder | None = None
) -> AttemptResult:
    execution = Execution(attempt, recorder or Recorder(), outputs)
    await execution.start()
    return await execution.wait()


# --- exit codes ---------------------------------------------------------------


async def test_exit_zero_succeeds(run_id: str, outputs: OutputsDirectory) -> None:
    result = await run(outputs, spec(run_id, "true"))

    assert result.outcome is AttemptOutcome.SUCCEEDED
    assert (result.exit_code, result.signal, result.message) == (0, None, "")
    assert result.argv == ("true",)
    assert result.started_at is not None
    assert result.started_at <= result.finished_at


async def test_exit_one_fails(run_id: str, outputs: OutputsDirectory) -> None:
    result = await run(outputs, spec(run_id, *sh("exit 3")))

    assert result.outcome is AttemptOutcome.FAILED
    assert (result.exit_code, result.signal) == (3, None)
    assert result.message == "exited with code 3"


async def test_death_by_signal_fails_with_the_signal(
    run_id: str, outputs: OutputsDirectory
) -> None:
    result = await run(outputs, spec(run_id, *sh("kill -KILL $$")))

    assert result.outcome is AttemptOutcome.FAILED
    assert (result.exit_code, result.signal) == (None, signal.SIGKILL)
    assert result.message == "killed by signal 9 (SIGKILL)"


# --- output -------------------------------------------------------------------


async def test_output_is_captured_per_stream(run_id: str, outputs: OutputsDirectory) -> None:
    recorder = Recorder()

    await run(outputs, spec(run_id, *sh("echo out; echo err >&2; echo more")), recorder)

    assert recorder.text(OutputStream.STDOUT) == "out\nmore\n"
    assert recorder.text(OutputStream.STDERR) == "err\n"


async def test_output_under_load_is_batched(run_id: str, outputs: OutputsDirectory) -> None:
    recorder = Recorder()
    script = "import sys\nfor i in range(50_000):\n    print(i)\n    sys.stdout.flush()"

    await run(outputs, spec(run_id, sys.executable, "-c", script), recorder)

    expected = "".join(f"{i}\n" for i in range(50_000))
    assert recorder.text(OutputStream.STDOUT) == expected
    assert all(len(data) <= 32 * 1024 for _, data, _ in recorder.batches)
    # 50,000 lines, one write each: a few dozen batches, not one per line.
    assert len(recorder.batches) < 200


async def test_quiet_output_arrives_within_the_batch_delay(
    run_id: str, outputs: OutputsDirectory
) -> None:
    recorder = Recorder()
    execution = Execution(spec(run_id, *sh("echo hello; exec sleep 1000")), recorder, outputs)
    await execution.start()

    await eventually(lambda: bool(recorder.batches), within=2.0)
    execution.kill(AttemptOutcome.CANCELLED, "done")
    await execution.wait()

    assert recorder.batches[0][:2] == (OutputStream.STDOUT, b"hello\n")


# --- environment and working directory ----------------------------------------


async def test_environment_and_workdir(
    run_id: str, outputs: OutputsDirectory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYDRA_TOKEN", "agent-secret")
    monkeypatch.setenv("FROM_AGENT", "not passed")  # only an allow-list is (test_isolation)
    recorder = Recorder()
    occurrence = datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=10)))
    script = (
        'pwd; echo "$HYDRA_RUN_ID|$HYDRA_TASK|$HYDRA_ATTEMPT|$HYDRA_OCCURRENCE"; '
        'echo "$FROM_AGENT|$FROM_TASK|${HYDRA_TOKEN-unset}"; '
        'test -f "$HYDRA_OUTPUT" && echo "$HYDRA_OUTPUT"'
    )
    attempt = spec(
        run_id,
        *sh(script),
        attempt=2,
        workdir=str(tmp_path),
        env={"FROM_TASK": "rendered", "HYDRA_RUN_ID": "spoofed"},
        occurrence=occurrence,
    )

    result = await run(outputs, attempt, recorder)

    assert result.outcome is AttemptOutcome.SUCCEEDED
    cwd, hydra_vars, other_vars, output_file = recorder.text(OutputStream.STDOUT).splitlines()
    assert cwd == str(tmp_path)
    assert hydra_vars == f"{run_id}|demo.task|2|2024-05-01T02:30:00+00:00"
    assert other_vars == "|rendered|unset"
    assert Path(output_file).parent.parent == Path(str(outputs.path))
    assert files_in(outputs) == []


def test_hydra_occurrence_is_utc_iso8601() -> None:
    occurrence = datetime(2024, 1, 1, 9, tzinfo=timezone(timedelta(hours=-5)))
    attempt = spec("r", "true", occurrence=occurrence)

    env = attempt_environment(attempt, "/tmp/out.json", base={})

    assert env["HYDRA_OCCURRENCE"] == "2024-01-01T14:00:00+00:00"
    assert datetime.fromisoformat(env["HYDRA_OCCURRENCE"]) == occurrence


# --- timeouts and kills ---------------------------------------------------------

# The child ignores SIGTERM (a subshell that traps it, then becomes sleep); the
# leader prints the child's pid and waits for it.
STUBBORN_CHILD = '(trap "" TERM; exec sleep 1000) & echo $!; wait'


async def test_timeout_kills_the_whole_group_including_a_child_ignoring_sigterm(
    run_id: str,
    outputs: OutputsDirectory,
) -> None:
    recorder = Recorder()
    attempt = spec(run_id, *sh(STUBBORN_CHILD), timeout=timedelta(seconds=0.3))

    began = time.monotonic()
    result = await run(outputs, attempt, recorder)

    child = int(recorder.text(OutputStream.STDOUT))
    assert result.outcome is AttemptOutcome.TIMED_OUT
    assert result.message == "timed out after 300ms"
    assert result.exit_code is None and result.signal is not None
    assert time.monotonic() - began >= 0.3 + 0.5  # timeout, then the whole grace
    await eventually(lambda: not is_alive(child), within=2)  # SIGKILLed; exiting takes a moment


async def test_timeout_kills_a_leader_ignoring_sigterm(
    run_id: str, outputs: OutputsDirectory
) -> None:
    attempt = spec(run_id, *sh('trap "" TERM; sleep 1000'), timeout=timedelta(seconds=0.2))

    result = await run(outputs, attempt)

    assert result.outcome is AttemptOutcome.TIMED_OUT
    assert result.signal == signal.SIGKILL


async def test_no_timeout_when_the_process_ends_first(
    run_id: str, outputs: OutputsDirectory
) -> None:
    result = await run(outputs, spec(run_id, "true", timeout=timedelta(seconds=30)))

    assert result.outcome is AttemptOutcome.SUCCEEDED


async def test_cancel_terminates_the_group(run_id: str, outputs: OutputsDirectory) -> None:
    recorder = Recorder()
    execution = Execution(spec(run_id, *sh("sleep 1000 & echo $!; wait")), recorder, outputs)
    started = await execution.start()
    assert started is not None
    await eventually(lambda: bool(recorder.batches))

    execution.kill(AttemptOutcome.CANCELLED, "cancelled: by a test")
    result = await execution.wait()

    assert result.outcome is AttemptOutcome.CANCELLED
    assert result.message == "cancelled: by a test"
    assert result.signal == signal.SIGTERM
    assert not is_alive(started.pid)
    child = int(recorder.text(OutputStream.STDOUT))
    await eventually(lambda: not is_alive(child), within=2)


async def test_a_graceful_exit_after_a_kill_keeps_the_kill_outcome(
    run_id: str, outputs: OutputsDirectory
) -> None:
    recorder = Recorder()
    script = 'trap "echo bye; exit 0" TERM; echo ready; sleep 1000 & wait'
    execution = Execution(spec(run_id, *sh(script)), recorder, outputs)
    await execution.start()
    await eventually(lambda: "ready" in recorder.text(OutputStream.STDOUT))

    execution.kill(AttemptOutcome.FENCED, "lease could not be renewed")
    result = await execution.wait()

    assert (result.outcome, result.exit_code) == (AttemptOutcome.FENCED, 0)
    assert recorder.text(OutputStream.STDOUT) == "ready\nbye\n"


async def test_an_immediate_kill_skips_the_grace(run_id: str, outputs: OutputsDirectory) -> None:
    recorder = Recorder()
    attempt = spec(run_id, *sh(STUBBORN_CHILD), kill_grace=timedelta(seconds=30))
    execution = Execution(attempt, recorder, outputs)
    started = await execution.start()
    assert started is not None
    await eventually(lambda: bool(recorder.batches))
    child = int(recorder.text(OutputStream.STDOUT))

    began = time.monotonic()
    execution.kill(AttemptOutcome.CANCELLED, "agent stopped")
    await eventually(lambda: not is_alive(started.pid))  # SIGTERM went out; the grace runs
    assert is_alive(child)
    execution.kill(AttemptOutcome.CANCELLED, "stop now", immediately=True)
    result = await execution.wait()

    assert time.monotonic() - began < 5  # not the 30 s grace
    assert (result.outcome, result.message) == (AttemptOutcome.CANCELLED, "agent stopped")
    await eventually(lambda: not is_alive(child), within=2)


async def test_leftover_group_members_are_killed_after_the_leader_exits(
    run_id: str, outputs: OutputsDirectory
) -> None:
    recorder = Recorder()
    # One stray holds the output pipe, one does not; neither may survive.
    script = "sleep 1000 & echo $!; sleep 1000 >/dev/null 2>&1 & echo $!"

    began = time.monotonic()
    result = await run(outputs, spec(run_id, *sh(script)), recorder)

    assert time.monotonic() - began < PIPE_DRAIN_SECONDS + 2
    assert result.outcome is AttemptOutcome.SUCCEEDED
    assert result.message == "killed processes left running in its process group"
    strays = [int(pid) for pid in recorder.text(OutputStream.STDOUT).split()]
    await eventually(lambda: not any(is_alive(pid) for pid in strays), within=2)


# --- spawn failures -------------------------------------------------------------


async def test_a_missing_program_cannot_start(run_id: str, outputs: OutputsDirectory) -> None:
    execution = Execution(spec(run_id, "/nonexistent/program", "--flag"), Recorder(), outputs)

    assert await execution.start() is None
    result = await execution.wait()

    assert result.outcome is AttemptOutcome.FAILED
    assert result.message.startswith("cannot start: ")
    assert "/nonexistent/program" in result.message
    assert result.started_at == result.finished_at
    assert (result.exit_code, result.signal) == (None, None)
    assert result.argv == ("/nonexistent/program", "--flag")


async def test_a_missing_workdir_cannot_start(
    run_id: str, outputs: OutputsDirectory, tmp_path: Path
) -> None:
    workdir = tmp_path / "missing"

    result = await run(outputs, spec(run_id, "true", workdir=str(workdir)))

    assert result.outcome is AttemptOutcome.FAILED
    assert result.message.startswith("cannot start: ")
    assert str(workdir) in result.message


async def test_a_program_without_permission_cannot_start(
    run_id: str, outputs: OutputsDirectory, tmp_path: Path
) -> None:
    program = tmp_path / "script.sh"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o644)

    result = await run(outputs, spec(run_id, str(program)))

    assert result.outcome is AttemptOutcome.FAILED
    assert "Permission denied" in result.message


async def test_an_empty_command_cannot_start(run_id: str, outputs: OutputsDirectory) -> None:
    result = await run(outputs, spec(run_id))

    assert (result.outcome, result.message) == (
        AttemptOutcome.FAILED,
        "cannot start: empty command",
    )


# --- what is streamed, and the tail --------------------------------------------------


class Sink:
    """A live sink that takes `accept` batches, then refuses."""

    def __init__(self, accept: int = 1_000_000) -> None:
        self.sent: list[tuple[OutputStream, bytes]] = []
        self._accept = accept

    def __call__(self, stream: OutputStream, data: bytes) -> bool:
        if len(self.sent) >= self._accept:
            return False
        self.sent.append((stream, data))
        return True


def test_output_is_streamed_up_to_the_head_and_its_end_kept_per_stream() -> None:
    sink = Sink()
    recorder = OutputRecorder(sink, OutputBudget(head=10, tail=8))
    for data in (b"abcd", b"efgh", b"ijkl", b"mnop"):
        recorder.add(OutputStream.STDOUT, data)
    recorder.add(OutputStream.STDERR, b"err")

    assert sink.sent == [
        (OutputStream.STDOUT, b"abcd"),
        (OutputStream.STDOUT, b"efgh"),
        (OutputStream.STDOUT, b"ij"),  # cut at the head; nothing after
    ]
    # Half the tail each; what stderr does not need, stdout may use.
    assert recorder.tails() == (
        StreamTail(stream=OutputStream.STDOUT, total_bytes=16, data=b"lmnop"),
        StreamTail(stream=OutputStream.STDERR, total_bytes=3, data=b"err"),
    )


def test_after_a_batch_that_could_not_be_sent_nothing_more_is_streamed() -> None:
    sink = Sink(accept=1)
    recorder = OutputRecorder(sink, OutputBudget(head=100, tail=100))
    for data in (b"one ", b"two ", b"three"):
        recorder.add(OutputStream.STDOUT, data)

    assert sink.sent == [(OutputStream.STDOUT, b"one ")]  # a prefix, never a gap
    assert recorder.tails() == (
        StreamTail(stream=OutputStream.STDOUT, total_bytes=13, data=b"one two three"),
    )


def test_no_output_has_no_tails() -> None:
    assert OutputRecorder(Sink(), output_budget(1024)).tails() == ()


def test_the_tail_of_a_big_limit_stays_far_below_the_message_limit() -> None:
    assert output_budget(1024 * 1024) == OutputBudget(head=512 * 1024, tail=512 * 1024)
    assert output_budget(64 * 1024 * 1024).tail == MAX_OUTPUT_TAIL
    assert output_budget(0) == OutputBudget(head=0, tail=0)


async def test_an_attempt_reports_the_true_end_of_a_flood(
    run_id: str, outputs: OutputsDirectory
) -> None:
    recorder = Recorder()
    attempt = spec(run_id, *sh("seq 1 200000; echo END"), output_limit=4096)

    result = await run(outputs, attempt, recorder)

    assert result.outcome is AttemptOutcome.SUCCEEDED
    assert len(recorder.text(OutputStream.STDOUT)) == 2048  # the head
    [tail] = result.output_tails
    assert tail.total_bytes == len("".join(f"{n}\n" for n in range(1, 200_001))) + 4
    assert len(tail.data) == 2048
    assert tail.data.endswith(b"\n199999\n200000\nEND\n")


# --- $HYDRA_OUTPUT ------------------------------------------------------------------


async def test_outputs_json_is_reported(run_id: str, outputs: OutputsDirectory) -> None:
    result = await run(outputs, spec(run_id, *sh("""echo '{"rows": 42}' > "$HYDRA_OUTPUT" """)))

    assert result.outcome is AttemptOutcome.SUCCEEDED
    assert result.outputs_json == '{"rows": 42}'


async def test_no_outputs_when_nothing_is_written(run_id: str, outputs: OutputsDirectory) -> None:
    result = await run(outputs, spec(run_id, "true"))

    assert result.outputs_json == ""


@pytest.mark.parametrize(
    "content",
    ["{not json", "[1, 2]", '"text"', '{"x": NaN}'],
    ids=["invalid", "list", "string", "nan"],
)
async def test_outputs_that_are_not_an_object_fail_the_attempt(
    run_id: str, outputs: OutputsDirectory, content: str
) -> None:
    script = f"""printf '%s' '{content}' > "$HYDRA_OUTPUT" """

    result = await run(outputs, spec(run_id, *sh(script)))

    assert result.outcome is AttemptOutcome.FAILED
    assert result.exit_code == 0
    assert result.message.startswith("$HYDRA_OUTPUT: not a JSON object")
    assert result.outputs_json == ""


async def test_outputs_over_64_kib_fail_the_attempt(run_id: str, outputs: OutputsDirectory) -> None:
    script = (
        "import json, os\n"
        "with open(os.environ['HYDRA_OUTPUT'], 'w') as f:\n"
        "    json.dump({'x': 'a' * 70_000}, f)"
    )

    result = await run(outputs, spec(run_id, sys.executable, "-c", script))

    assert result.outcome is AttemptOutcome.FAILED
    assert result.message == "outputs file exceeded 64 KiB ($HYDRA_OUTPUT)"


async def test_bad_outputs_of_a_failed_attempt_keep_the_exit_message(
    run_id: str, outputs: OutputsDirectory
) -> None:
    result = await run(outputs, spec(run_id, *sh("""echo '[]' > "$HYDRA_OUTPUT"; exit 2""")))

    assert result.outcome is AttemptOutcome.FAILED
    assert result.message == "exited with code 2; $HYDRA_OUTPUT: not a JSON object (got list)"


def test_read_outputs_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_outputs(str(tmp_path / "none.json")) == ""


def test_read_outputs_refuses_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    path.write_bytes(b'{"a": "\xff"}')

    with pytest.raises(OutputsError, match="not a JSON object"):
        read_outputs(str(path))


# --- the outputs directory ----------------------------------------------------------

#: Says where $HYDRA_OUTPUT is, if the file exists.
PRINT_OUTPUT_FILE = 'test -f "$HYDRA_OUTPUT" && echo "$HYDRA_OUTPUT"'


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (PRINT_OUTPUT_FILE, ""),
        (f"{PRINT_OUTPUT_FILE}; exit 3", "exited with code 3"),
        (f"""{PRINT_OUTPUT_FILE}; echo 1 > "$HYDRA_OUTPUT" """, "not a JSON object (got int)"),
    ],
    ids=["success", "failure", "bad outputs"],
)
async def test_the_output_file_is_in_the_agents_directory_and_goes_with_the_attempt(
    run_id: str, outputs: OutputsDirectory, script: str, message: str
) -> None:
    recorder = Recorder()

    result = await run(outputs, spec(run_id, *sh(script), attempt=3), recorder)

    assert result.message.endswith(message)
    output_file = Path(recorder.text(OutputStream.STDOUT).strip())
    assert output_file.parent.parent == Path(str(outputs.path))
    assert output_file.parent.name.startswith(f"{run_id}-3-")
    assert output_file.name == "outputs.json"
    assert files_in(outputs) == []


async def test_a_killed_attempt_leaves_no_output_file(
    run_id: str, outputs: OutputsDirectory
) -> None:
    recorder = Recorder()
    attempt = spec(run_id, *sh(f"{PRINT_OUTPUT_FILE}; exec sleep 1000"))
    execution = Execution(attempt, recorder, outputs)
    await execution.start()
    await eventually(lambda: bool(recorder.batches))
    output_file = Path(recorder.text(OutputStream.STDOUT).strip())
    assert files_in(outputs) == [output_file.parent.name]

    execution.kill(AttemptOutcome.CANCELLED, "cancelled: by a test")
    await execution.wait()

    assert files_in(outputs) == []


async def test_a_spawn_failure_leaves_no_output_file(
    run_id: str, outputs: OutputsDirectory, tmp_path: Path
) -> None:
    result = await run(outputs, spec(run_id, "true", workdir=str(tmp_path / "missing")))

    assert result.message.startswith("cannot start: ")
    assert outputs.path is not None
    assert files_in(outputs) == []


class RecordedPopen(subprocess.Popen[bytes]):
    """``subprocess.Popen`` (asyncio's included) that says which processes it spawned."""

    spawned: ClassVar[list[int]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spawned.append(self.pid)


@only_through_transport
async def test_a_cancelled_spawn_leaves_no_output_file_and_no_process(
    run_id: str, outputs: OutputsDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subprocess, "Popen", RecordedPopen)
    monkeypatch.setattr(RecordedPopen, "spawned", [])
    execution = Execution(spec(run_id, *sh("sleep 1000 & exec sleep 1000")), Recorder(), outputs)
    starting = asyncio.create_task(execution.start())
    for _ in range(10):  # turn by turn, until the process runs while its pipes connect
        await asyncio.sleep(0)
        if RecordedPopen.spawned:
            break
    assert RecordedPopen.spawned and not starting.done()
    assert len(files_in(outputs)) == 1

    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting

    assert files_in(outputs) == []
    assert zombie_children() == []
    await eventually(lambda: not processes_with_run_id(run_id), within=2)  # SIGKILLed


@only_through_pidfds
@pytest.mark.parametrize("workdir", [False, True], ids=["posix_spawn", "Popen"])
async def test_start_returns_without_letting_the_loop_turn(
    run_id: str, outputs: OutputsDirectory, tmp_path: Path, workdir: bool
) -> None:
    # The spawn runs on the loop's thread (posix_spawn, or Popen with a workdir): a
    # cancel comes before the process exists or once it is supervised, never between.
    where = {"workdir": str(tmp_path)} if workdir else {}
    execution = Execution(spec(run_id, "sleep", "1000", **where), Recorder(), outputs)
    starting = asyncio.create_task(execution.start())
    await asyncio.sleep(0)  # one turn: start ran to its end

    assert starting.done() and starting.result() is not None
    execution.kill(AttemptOutcome.CANCELLED, "done")
    assert (await execution.wait()).outcome is AttemptOutcome.CANCELLED


def test_the_outputs_directory_is_private_made_on_first_use_and_removed_by_close() -> None:
    directory = OutputsDirectory("agent/1")
    assert directory.path is None
    try:
        first = Path(directory.new_file(spec("run/../7", "true", attempt=2)))
        second = Path(directory.new_file(spec("run/../7", "true", attempt=2)))
        path = Path(str(directory.path))
        assert path.name == f"hydra-agent-agent_1.{os.getpid()}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
        # One directory per attempt, private too.
        assert first.parent != second.parent
        assert first.parent.parent == second.parent.parent == path
        assert stat.S_IMODE(first.parent.stat().st_mode) == 0o700
        assert first.parent.name.startswith("run_.._7-2-")
        assert first.name == second.name == "outputs.json"
        assert first.read_bytes() == b""
        directory.remove(str(first))
        assert not first.parent.exists()
        assert second.exists()
    finally:
        directory.close()

    assert not path.exists()
    with pytest.raises(OSError, match="the agent is stopping"):
        directory.new_file(spec("r", "true"))


def test_an_attempts_directory_goes_with_what_its_process_left_in_it() -> None:
    directory = OutputsDirectory()
    try:
        empty = Path(directory.new_file(spec("r", "true")))
        left = Path(directory.new_file(spec("r", "true", attempt=2)))
        (left.parent / "scratch" / "deeper").mkdir(parents=True)
        (left.parent / "scratch" / "deeper" / "data").write_bytes(b"x")
        left.unlink()  # and the process took $HYDRA_OUTPUT away itself

        directory.remove(str(empty))
        directory.remove(str(left))

        assert not empty.parent.exists() and not left.parent.exists()
    finally:
        directory.close()


def test_an_outputs_directory_removed_under_the_agent_is_made_again() -> None:
    directory = OutputsDirectory()
    try:
        first = Path(directory.new_file(spec("r", "true")))
        shutil.rmtree(first.parent.parent)

        second = Path(directory.new_file(spec("r", "true")))

        assert second.exists()
        assert second.parent != first.parent
    finally:
        directory.close()


def test_an_agent_removes_what_dead_processes_of_its_id_left(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    mine_dead = tmp_path / f"hydra-agent-a1.{dead.pid}"
    mine_alive = tmp_path / f"hydra-agent-a1.{os.getppid()}"
    other_agent = tmp_path / f"hydra-agent-a2.{dead.pid}"
    for path in (mine_dead, mine_alive, other_agent):
        (path / "r-1-x").mkdir(parents=True)
        (path / "r-1-x" / "outputs.json").write_text("{}")

    removed = OutputsDirectory("a1", base=str(tmp_path)).remove_stale()

    assert removed == [str(mine_dead)]
    assert not mine_dead.exists()
    assert mine_alive.exists() and other_agent.exists()


def test_read_outputs_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    with pytest.raises(OutputsError, match="not a regular file"):
        read_outputs(str(fifo))  # at once: opening a FIFO to read must not wait for a writer
    with pytest.raises(OutputsError, match="not a regular file"):
        read_outputs(str(tmp_path))


# --- threads ------------------------------------------------------------------------


@only_through_pidfds
async def test_through_pidfds_an_attempt_needs_no_thread_nor_child_watcher(
    run_id: str, outputs: OutputsDirectory
) -> None:
    # asyncio's default watcher on 3.11 would start a thread for this child.
    execution = Execution(spec(run_id, "sleep", "0.2"), Recorder(), outputs)
    threads = set(threading.enumerate())

    assert await execution.start() is not None
    assert set(threading.enumerate()) <= threads
    assert (await execution.wait()).outcome is AttemptOutcome.SUCCEEDED


# --- what the processes cost the agent ------------------------------------------------


def open_fds() -> list[str]:
    """What this process's file descriptors point to."""
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the one listdir used is gone already
            fds.append(os.readlink(f"/proc/self/fd/{fd}"))
    return sorted(fds)


def zombie_children() -> list[int]:
    """This process's children that exited and were not reaped."""
    zombies = []
    with os.scandir("/proc") as entries:
        pids = [entry.name for entry in entries if entry.name.isdigit()]
    for pid in pids:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/stat") as file:
                fields = file.read().rpartition(")")[2].split()
            if fields[0] == "Z" and int(fields[1]) == os.getpid():
                zombies.append(int(pid))
    return zombies


async def test_attempts_leave_no_file_descriptor_and_no_zombie(
    run_id: str, outputs: OutputsDirectory
) -> None:
    attempts = [
        spec(run_id, *sh("echo out; echo err >&2; echo '{}' > \"$HYDRA_OUTPUT\"")),
        spec(run_id, *sh("exit 3")),
        spec(run_id, "/nonexistent/program"),
        spec(
            run_id,
            *sh(STUBBORN_CHILD),
            timeout=timedelta(seconds=0.1),
            kill_grace=timedelta(seconds=0.05),
        ),
        spec(run_id, *sh("sleep 1000 >/dev/null 2>&1 &")),  # a leftover, killed
    ]
    await run(outputs, spec(run_id, "true"))  # whatever the first attempt sets up, once
    before = open_fds()

    for _ in range(3):
        results = await asyncio.gather(*(run(outputs, attempt) for attempt in attempts))
        assert [result.outcome for result in results] == [
            AttemptOutcome.SUCCEEDED,
            AttemptOutcome.FAILED,
            AttemptOutcome.FAILED,
            AttemptOutcome.TIMED_OUT,
            AttemptOutcome.SUCCEEDED,
        ]

    await eventually(lambda: open_fds() == before, within=2.0)
    assert zombie_children() == []
    await eventually(lambda: not processes_with_run_id(run_id), within=2)  # SIGKILLed


def nanoseconds_since_epoch(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


@only_through_pidfds
async def test_each_start_time_is_taken_right_after_its_own_spawn(
    run_id: str, outputs: OutputsDirectory
) -> None:
    recorders = [Recorder() for _ in range(5)]
    executions = [Execution(spec(run_id, "date", "+%s%N"), r, outputs) for r in recorders]

    # Five at once, as when several leased-ahead runs are due together; they are
    # spawned in this order.
    started = await asyncio.gather(*(execution.start() for execution in executions))
    await asyncio.gather(*(execution.wait() for execution in executions))

    stamps = [nanoseconds_since_epoch(s.started_at) for s in started if s is not None]
    printed = [int(recorder.text(OutputStream.STDOUT)) for recorder in recorders]
    assert len(stamps) == 5
    # Each start time is its own: taken before the next program was spawned
    # (through asyncio's transport, each came after all five forks).
    for stamp, next_printed in zip(stamps, printed[1:], strict=False):
        assert stamp <= next_printed
    for stamp, own in zip(stamps, printed, strict=True):
        assert abs(own - stamp) < 50_000_000  # and it is the program's start, within 50 ms


@only_through_pidfds
async def test_a_process_that_cannot_be_watched_is_killed_and_cannot_start(
    run_id: str, outputs: OutputsDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_fds(pid: int, flags: int = 0) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    before = open_fds()
    monkeypatch.setattr(os, "pidfd_open", out_of_fds)

    result = await run(outputs, spec(run_id, *sh("sleep 1000 & exec sleep 1000")))

    assert result.outcome is AttemptOutcome.FAILED
    assert result.message == "cannot start: [Errno 24] Too many open files"
    assert zombie_children() == []
    assert open_fds() == before
    await eventually(lambda: not processes_with_run_id(run_id), within=2)  # SIGKILLed


# --- the batcher alone ------------------------------------------------------------


async def test_batcher_holds_output_until_released() -> None:
    recorder = Recorder()
    batcher = OutputBatcher(recorder, max_bytes=4, max_delay=0.05)

    batcher.add(OutputStream.STDOUT, b"123456789")
    assert recorder.batches == []
    batcher.release()

    assert [data for _, data, _ in recorder.batches] == [b"1234", b"5678"]
    await eventually(lambda: len(recorder.batches) == 3, within=2.0)
    assert recorder.batches[2][1] == b"9"


async def test_batcher_flushes_after_the_delay_not_per_write() -> None:
    recorder = Recorder()
    batcher = OutputBatcher(recorder, max_bytes=1024, max_delay=0.05)
    batcher.release()

    for line in (b"a\n", b"b\n", b"c\n"):
        batcher.add(OutputStream.STDERR, line)
    assert recorder.batches == []

    await eventually(lambda: bool(recorder.batches), within=2.0)
    assert [data for _, data, _ in recorder.batches] == [b"a\nb\nc\n"]


def test_outputs_go_to_a_memory_backed_directory_when_there_is_one(tmp_path: Path) -> None:
    assert memory_backed_tmp({"XDG_RUNTIME_DIR": str(tmp_path)}) == str(tmp_path)
    missing = str(tmp_path / "gone")
    expected = "/dev/shm" if os.access("/dev/shm", os.W_OK | os.X_OK) else None
    assert memory_backed_tmp({"XDG_RUNTIME_DIR": missing}) == expected
    assert memory_backed_tmp({}) == expected
