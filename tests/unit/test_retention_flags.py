"""``--retention``, ``--audit-retention``, ``--prune-interval`` (and their
environment variables): parsed, checked, wired into the coordinator's configuration."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from hydra import cli
from hydra.domain import Retention
from hydra.errors import InvalidArgument


def _config(*flags: str) -> Any:
    args = cli._parser().parse_args(["coordinator", "--db", "dbname=x", *flags])
    return cli.coordinator_config(args, "dbname=x")


def test_nothing_is_pruned_unless_configured() -> None:
    config = _config()
    assert config.retention == Retention()
    assert config.audit_retention is None
    assert config.prune_interval == timedelta(minutes=1)


def test_the_flags_set_the_defaults() -> None:
    config = _config(
        "--retention", "max_age=30d,keep_last=100", "--audit-retention", "365d",
        "--prune-interval", "5m",
    )  # fmt: skip
    assert config.retention == Retention(max_age=timedelta(days=30), keep_last=100)
    assert config.audit_retention == timedelta(days=365)
    assert config.prune_interval == timedelta(minutes=5)


def test_the_environment_sets_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_RETENTION", "output_max_age=7d")
    monkeypatch.setenv("HYDRA_AUDIT_RETENTION", "90d")
    config = _config()
    assert config.retention == Retention(output_max_age=timedelta(days=7))
    assert config.audit_retention == timedelta(days=90)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--retention", "max_age=soon"], "--retention.max_age: invalid duration"),
        (["--retention", "keep=3"], "--retention: expected max_age=..."),
        (["--audit-retention", "0s"], "--audit-retention: must be more than 0s"),
        (["--prune-interval", "never"], "--prune-interval"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(flags: list[str], message: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        _config(*flags)
    assert message in str(refused.value)
