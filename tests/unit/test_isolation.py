"""What attempts and command checks get from the agent (real processes): an allow-listed
environment, secrets read from the secrets directory and masked in their output,
and, as root, another user."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from hydra.agent.attempt import AttemptResult, AttemptSpec, OutputStream
from hydra.agent.daemon import AgentConfig, AgentDaemon
from hydra.agent.executor import Execution, attempt_environment
from hydra.agent.isolation import Isolation, IsolationError, RunAs
from hydra.agent.output import OutputsDirectory
from hydra.agent.preconditions import evaluate
from hydra.agent.secrets import SecretError, read_secret
from hydra.agent.token_file import TokenFileError, read_token_file
from hydra.domain import AttemptOutcome, CommandCheck

from support.proc import unique_run_id

AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def run_id() -> Iterator[str]:
    yield from unique_run_id()


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "secrets"
    directory.mkdir()
    (directory / "warehouse-db").write_bytes(b"hunter2-pw\n")  # one newline is stripped
    (directory / "api.key").write_bytes(b"k-123456\n\n")  # only one
    return directory


class Recorder:
    def __init__(self) -> None:
        self.batches: list[tuple[OutputStream, bytes]] = []

    def __call__(self, stream: OutputStream, data: bytes) -> bool:
        self.batches.append((stream, data))
        return True

    def text(self, stream: OutputStream = OutputStream.STDOUT) -> str:
        return b"".join(data for s, data in self.batches if s is stream).decode()


def attempt(run_id: str, script: str, **fields: object) -> AttemptSpec:
    return AttemptSpec(
        run_id=run_id,
        task="t",
        attempt=1,
        argv=("sh", "-c", script),
        kill_grace=timedelta(seconds=0.5),
        **fields,  # type: ignore[arg-type]
    )


async def run(
    spec: AttemptSpec,
    isolation: Isolation,
    recorder: Recorder,
    owner: tuple[int, int] | None = None,
) -> AttemptResult:
    outputs = OutputsDirectory(owner=owner)
    try:
        execution = Execution(spec, recorder, outputs, isolation)
        await execution.start()
        return await execution.wait()
    finally:
        outputs.close()


# --- the environment -------------------------------------------------------------------


def test_only_the_allow_list_and_pass_env_reach_a_task() -> None:
    agent_env = {
        "PATH": "/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "LC_TIME": "en_GB.UTF-8",
        "TZ": "UTC",
        "AWS_SECRET_ACCESS_KEY": "aws-key",
        "AWS_REGION": "eu-west-1",
        "PIP_INDEX_URL": "https://pip",
        "HYDRA_TOKEN": "agent-token",
        "HYDRA_COORDINATORS": "c:7070",
    }
    spec = AttemptSpec(run_id="r", task="t", attempt=1, argv=("true",), env={"X": "1"})
    isolation = Isolation(pass_env=("AWS_REGION", "PIP_*"))

    env = attempt_environment(spec, "/o", isolation=isolation, base=agent_env)

    assert set(env) == {
        *("PATH", "HOME", "LANG", "LC_TIME", "TZ", "AWS_REGION", "PIP_INDEX_URL", "X"),
        *("HYDRA_RUN_ID", "HYDRA_TASK", "HYDRA_ATTEMPT", "HYDRA_OUTPUT"),
    }


def test_the_agent_credential_cannot_be_passed() -> None:
    with pytest.raises(IsolationError, match="HYDRA_TOKEN"):
        Isolation(pass_env=("HYDRA_TOKEN",))


async def test_a_task_printing_env_shows_neither_the_agent_variables_nor_its_token(
    run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-key-value")
    monkeypatch.setenv("HYDRA_TOKEN", "agent-token-value")
    monkeypatch.setenv("PASSED_ON", "yes")
    recorder = Recorder()

    result = await run(attempt(run_id, "env"), Isolation(pass_env=("PASSED_ON",)), recorder)

    assert result.outcome is AttemptOutcome.SUCCEEDED
    printed = recorder.text()
    assert "PASSED_ON=yes" in printed
    assert "PATH=" in printed
    assert "aws-key-value" not in printed and "AWS_SECRET_ACCESS_KEY" not in printed
    assert "agent-token-value" not in printed and "HYDRA_TOKEN" not in printed


async def test_a_command_check_gets_the_same_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-key-value")
    check = CommandCheck(argv=("sh", "-c", 'test -z "${AWS_SECRET_ACCESS_KEY-}" && test "$PATH"'))

    verdict = await evaluate(check, isolation=Isolation())

    assert verdict.ready, verdict.message


# --- secrets ---------------------------------------------------------------------------


def test_a_secret_file_loses_one_trailing_newline(secrets_dir: Path) -> None:
    assert read_secret(str(secrets_dir), "warehouse-db") == b"hunter2-pw"
    assert read_secret(str(secrets_dir), "api.key") == b"k-123456\n"


@pytest.mark.parametrize("name", ["..", ".", "a/b", ""])
def test_a_secret_name_cannot_leave_the_directory(secrets_dir: Path, name: str) -> None:
    with pytest.raises(SecretError, match="not a secret name"):
        read_secret(str(secrets_dir), name)


def test_a_fifo_in_the_secrets_directory_does_not_block(secrets_dir: Path) -> None:
    os.mkfifo(secrets_dir / "fifo")
    with pytest.raises(SecretError, match=r"'fifo' in .*not a regular file"):
        read_secret(str(secrets_dir), "fifo")


async def test_a_secret_reaches_the_task_and_is_masked_in_everything_it_reports(
    run_id: str, secrets_dir: Path
) -> None:
    script = (
        'test "$DB_PASSWORD" = hunter2-pw || exit 9; '
        'echo "the password is $DB_PASSWORD, key $KEY"; '
        'printf %s "$DB_PASSWORD" >&2; '
        'printf \'{"dsn": "u:%s@db", "n": 1}\' "$DB_PASSWORD" > "$HYDRA_OUTPUT"'
    )
    spec = attempt(run_id, script, secret_env={"DB_PASSWORD": "warehouse-db", "KEY": "api.key"})
    recorder = Recorder()

    result = await run(spec, Isolation(secrets_dir=str(secrets_dir)), recorder)

    assert result.outcome is AttemptOutcome.SUCCEEDED, result.message
    assert recorder.text() == "the password is ***, key ***\n"
    assert recorder.text(OutputStream.STDERR) == "***"
    tails = {tail.stream: tail.data for tail in result.output_tails}
    assert tails == {
        OutputStream.STDOUT: b"the password is ***, key ***\n",
        OutputStream.STDERR: b"***",
    }
    assert json.loads(result.outputs_json) == {"dsn": "u:***@db", "n": 1}


async def test_a_secret_split_across_writes_is_still_masked(run_id: str, secrets_dir: Path) -> None:
    script = 'printf hunt; sleep 0.3; printf "er2-pw and more\\n"'
    spec = attempt(run_id, script, secret_env={"P": "warehouse-db"})
    recorder = Recorder()

    await run(spec, Isolation(secrets_dir=str(secrets_dir)), recorder)

    assert recorder.text() == "*** and more\n"


async def test_a_missing_secret_fails_the_attempt_naming_it_and_the_directory(
    run_id: str, secrets_dir: Path
) -> None:
    spec = attempt(run_id, "true", secret_env={"P": "no-such-secret"})

    result = await run(spec, Isolation(secrets_dir=str(secrets_dir)), Recorder())

    assert result.outcome is AttemptOutcome.FAILED
    assert result.message == f"cannot start: secret 'no-such-secret' not found in {secrets_dir}"


async def test_a_secret_without_a_secrets_dir_fails_the_attempt(run_id: str) -> None:
    result = await run(attempt(run_id, "true", secret_env={"P": "db"}), Isolation(), Recorder())

    assert result.outcome is AttemptOutcome.FAILED
    assert result.message == "cannot start: secret db needed, but this agent has no --secrets-dir"


async def test_a_missing_secrets_dir_is_named(run_id: str, tmp_path: Path) -> None:
    isolation = Isolation(secrets_dir=str(tmp_path / "gone"))

    result = await run(attempt(run_id, "true", secret_env={"P": "db"}), isolation, Recorder())

    assert result.message == (
        f"cannot start: secret 'db' not found in {tmp_path / 'gone'} (the directory does not exist)"
    )


# --- the token file --------------------------------------------------------------------


def test_a_token_file_is_read_stripped(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  s3cret-token \n")
    assert read_token_file(str(path)) == "s3cret-token"
    path.write_text("\n")
    with pytest.raises(TokenFileError, match="the file is empty"):
        read_token_file(str(path))
    with pytest.raises(TokenFileError, match="No such file"):
        read_token_file(str(tmp_path / "missing"))


def test_an_agent_does_not_start_without_its_token_file(tmp_path: Path) -> None:
    config = AgentConfig(targets=["127.0.0.1:1"], token_file=str(tmp_path / "missing"))
    with pytest.raises(TokenFileError, match=r"--token-file .*missing: No such file"):
        AgentDaemon(config)


def test_an_unknown_run_as_user_is_a_start_error() -> None:
    with pytest.raises(IsolationError, match="--run-as no-such-user-here: no such user"):
        RunAs.lookup("no-such-user-here")


# --- run as ----------------------------------------------------------------------------


@pytest.fixture(params=["setpriv", "python launcher"])
def nobody(request: pytest.FixtureRequest) -> RunAs:
    """nobody, switched to by setpriv or, where it is missing, by hydra.agent._run_as."""
    if request.param == "setpriv":
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("no setpriv here")
        return RunAs.lookup("nobody", setpriv=setpriv)
    return RunAs.lookup("nobody", setpriv=None)


@AS_ROOT
async def test_run_as_nobody_runs_the_attempt_as_nobody_in_a_directory_of_its_own(
    run_id: str, nobody: RunAs
) -> None:
    script = 'id -u; id -g; echo "$HOME|$USER|$LOGNAME"; pwd; echo \'{"ok": 1}\' > "$HYDRA_OUTPUT"'
    recorder = Recorder()

    result = await run(
        attempt(run_id, script), Isolation(run_as=nobody), recorder, owner=(nobody.uid, nobody.gid)
    )

    assert result.outcome is AttemptOutcome.SUCCEEDED, (result.message, recorder.batches)
    uid, gid, identity, cwd = recorder.text().splitlines()
    entry = pwd.getpwnam("nobody")
    assert (int(uid), int(gid)) == (entry.pw_uid, entry.pw_gid)
    assert identity == f"{entry.pw_dir}|nobody|nobody"
    assert cwd.startswith(tempfile_base()) and f"{run_id}-1-" in cwd
    assert json.loads(result.outputs_json) == {"ok": 1}


@AS_ROOT
async def test_a_command_check_runs_as_the_user_too(nobody: RunAs) -> None:
    check = CommandCheck(argv=("sh", "-c", f'test "$(id -u)" = {nobody.uid} && echo as-nobody'))

    verdict = await evaluate(check, isolation=Isolation(run_as=nobody))

    assert verdict.ready and verdict.message == "exit code 0: as-nobody", verdict.message


@AS_ROOT
async def test_under_run_as_a_link_put_in_place_of_the_outputs_file_is_not_followed(
    run_id: str, tmp_path: Path, nobody: RunAs
) -> None:
    private = tmp_path / "agent-only.json"
    private.write_text('{"root": "only"}')
    private.chmod(0o600)
    script = f'rm "$HYDRA_OUTPUT"; ln -s {private} "$HYDRA_OUTPUT"'

    result = await run(
        attempt(run_id, script), Isolation(run_as=nobody), Recorder(), (nobody.uid, nobody.gid)
    )

    assert result.outcome is AttemptOutcome.FAILED
    assert "root" not in result.outputs_json
    assert "$HYDRA_OUTPUT: cannot be read" in result.message


@AS_ROOT
def test_the_agent_directory_lets_the_user_through_but_not_list_it() -> None:
    outputs = OutputsDirectory(owner=(65534, 65534))
    try:
        path = outputs.new_file(AttemptSpec(run_id="r", task="t", attempt=1, argv=("true",)))
        assert stat.S_IMODE(os.stat(str(outputs.path)).st_mode) == 0o711
        assert os.stat(path).st_uid == 65534
        assert os.stat(os.path.dirname(path)).st_uid == 65534
    finally:
        outputs.close()


def tempfile_base() -> str:
    from hydra.agent.output import memory_backed_tmp

    return memory_backed_tmp() or "/tmp"


# --- configuration and start errors ----------------------------------------------------


def test_the_environment_configures_isolation(tmp_path: Path) -> None:
    environ = {
        "HYDRA_COORDINATORS": "a:7070",
        "HYDRA_TOKEN_FILE": "/etc/hydra/token",
        "HYDRA_PASS_ENV": "AWS_REGION, PIP_*,",
        "HYDRA_RUN_AS": "nobody",
        "HYDRA_SECRETS_DIR": "/run/secrets",
    }
    config = AgentConfig.from_environ(environ)
    assert config.token_file == "/etc/hydra/token"
    assert config.pass_env == ("AWS_REGION", "PIP_*")
    assert (config.run_as, config.secrets_dir) == ("nobody", "/run/secrets")


def test_the_token_file_is_read_again_at_each_connection(tmp_path: Path) -> None:
    from hydra.agent.leases import LeaseBook
    from hydra.agent.session import AgentState

    path = tmp_path / "token"
    path.write_text("first\n")
    config = AgentConfig(targets=["a:1"], token="from-env", token_file=str(path))
    state = AgentState(config=config, book=LeaseBook(None), request_drain=lambda reason: None)  # type: ignore[arg-type]
    assert state.token() == "first"
    path.write_text("rotated\n")
    assert state.token() == "rotated"
    path.unlink()  # unreadable for a moment: the last one read is used, and logged
    assert state.token() == "rotated"


def test_a_token_file_others_can_read_is_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from hydra.agent.token_file import check_token_file

    path = tmp_path / "token"
    path.write_text("t")
    path.chmod(0o644)
    check_token_file(str(path))
    assert "can be read by its group or others (mode 0644); chmod 600 it" in caplog.text


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--run-as", "no-such-user-here"], "--run-as no-such-user-here: no such user"),
        (["--token-file", "/nonexistent/token"], "--token-file /nonexistent/token: No such file"),
        (["--pass-env", "HYDRA_TOKEN"], "--pass-env HYDRA_TOKEN: the agent's credential"),
    ],
)
def test_hydra_agent_refuses_to_start_with_a_clear_message(flags: list[str], message: str) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "hydra", "agent", "--coordinator", "127.0.0.1:1", *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"hydra: error: {message}" in done.stderr
    assert "Traceback" not in done.stderr


def test_run_as_another_user_when_not_root_is_a_start_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # This machine's Python is out of an unprivileged user's reach: pretend to be one.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(IsolationError, match=r"the agent must run as root .* uid 1000"):
        RunAs.lookup("nobody")
    monkeypatch.setattr(os, "geteuid", lambda: 65534)
    assert not RunAs.lookup("nobody").switches  # already that user: nothing to switch
    assert RunAs.lookup("nobody").command(["id"]) == ["id"]


@AS_ROOT
async def test_run_as_keeps_the_process_group_and_drops_every_group_and_capability(
    run_id: str, nobody: RunAs
) -> None:
    script = "id -G; grep -E '^(CapEff|CapPrm):' /proc/self/status; ps -o pgid= -p $$"
    recorder = Recorder()

    result = await run(attempt(run_id, script), Isolation(run_as=nobody), recorder, (65534, 65534))

    groups, cap_effective, cap_permitted, pgid = recorder.text().splitlines()
    assert result.outcome is AttemptOutcome.SUCCEEDED
    assert set(groups.split()) == {str(group) for group in nobody.groups}
    assert cap_effective.split()[1] == cap_permitted.split()[1] == "0000000000000000"
    assert result.output_tails and int(pgid) > 0


@AS_ROOT
async def test_a_missing_program_under_run_as_fails_saying_so(run_id: str, nobody: RunAs) -> None:
    spec = AttemptSpec(run_id=run_id, task="t", attempt=1, argv=("no-such-program-xyz",))
    recorder = Recorder()

    result = await run(spec, Isolation(run_as=nobody), recorder, (65534, 65534))

    assert result.outcome is AttemptOutcome.FAILED
    assert result.message == "exited with code 127"
    assert "no-such-program-xyz" in recorder.text(OutputStream.STDERR)
