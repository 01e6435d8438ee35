"""``--render-timeout`` / ``HYDRA_RENDER_TIMEOUT``: parsed, bounded, wired into the
coordinator's configuration."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hydra import cli
from hydra.errors import InvalidArgument


def _config(*flags: str) -> object:
    args = cli._parser().parse_args(["coordinator", "--db", "dbname=x", *flags])
    return cli.coordinator_config(args, "dbname=x")


def test_the_render_timeout_defaults_to_one_second() -> None:
    assert _config().render_timeout == timedelta(seconds=1)


def test_the_flag_and_the_environment_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _config("--render-timeout", "2500ms").render_timeout == timedelta(seconds=2.5)
    monkeypatch.setenv("HYDRA_RENDER_TIMEOUT", "3s")
    assert _config().render_timeout == timedelta(seconds=3)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--render-timeout", "0s"], "--render-timeout: must be more than 0s and at most half"),
        (["--render-timeout", "6s"], "--render-timeout: must be more than 0s and at most half"),
        (["--render-timeout", "soon"], "--render-timeout"),
    ],
)
def test_a_bad_render_timeout_is_refused_naming_the_flag(flags: list[str], message: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        _config(*flags)
    assert message in str(refused.value)


def test_hydra_reports_a_bad_render_timeout_without_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["coordinator", "--db", "dbname=x", "--render-timeout", "0s"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("hydra: error: --render-timeout: ")
    assert "Traceback" not in error
