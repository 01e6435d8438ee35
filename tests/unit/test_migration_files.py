"""The migration files: names, numbering, and that they ship inside the package.

They live in ``migrations/`` at the top of the repository and install as the
package ``hydra.coordinator.migrations``; tests/e2e/test_wheel.py checks a
built wheel end to end.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from hydra.coordinator import migrate
from hydra.coordinator.migrate import MIGRATIONS_PACKAGE, all_migrations

FILE_NAME = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")
ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIR = ROOT / "migrations"


def packaged_names() -> list[str]:
    folder = resources.files(MIGRATIONS_PACKAGE)
    return sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))


def setuptools_config() -> Any:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_names_are_numbered_verb_object() -> None:
    names = packaged_names()
    assert names, "no migrations found through importlib.resources"
    assert [name for name in names if not FILE_NAME.match(name)] == []


def test_numbers_are_contiguous_from_0001() -> None:
    numbers = [int(name[:4]) for name in packaged_names()]
    assert numbers == list(range(1, len(numbers) + 1))


def test_runner_sees_every_file_in_order() -> None:
    assert [migration.name for migration in all_migrations()] == packaged_names()
    assert [migration.version for migration in all_migrations()] == list(
        range(1, len(packaged_names()) + 1)
    )


def test_the_package_is_the_top_level_migrations_directory() -> None:
    assert setuptools_config()["package-dir"][MIGRATIONS_PACKAGE] == "migrations"
    assert Path(str(resources.files(MIGRATIONS_PACKAGE))).resolve() == SOURCE_DIR


def test_package_data_globs_ship_every_migration() -> None:
    # An editable install reads the source tree; the globs decide what a wheel holds.
    globs = setuptools_config()["package-data"][MIGRATIONS_PACKAGE]
    sources = sorted(path.name for path in SOURCE_DIR.glob("*.sql"))
    assert sources == packaged_names()
    unshipped = [
        name for name in sources if not any(fnmatch.fnmatch(name, pattern) for pattern in globs)
    ]
    assert unshipped == []


def test_every_package_under_hydra_is_listed() -> None:
    # pyproject lists the packages (find cannot map migrations/); a new package
    # missing from the list would silently be missing from the wheel.
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "hydra").rglob("__init__.py")
    }
    assert sorted(found | {MIGRATIONS_PACKAGE}) == sorted(setuptools_config()["packages"])


def test_files_are_utf8_sql_without_transaction_control() -> None:
    # Each file runs inside the transaction the runner opens for it.
    for migration in all_migrations():
        text = migration.sql.decode("utf-8")
        statements = {line.strip().upper().rstrip(";") for line in text.splitlines()}
        assert statements.isdisjoint({"BEGIN", "COMMIT", "ROLLBACK"}), migration.name


def test_no_migrations_at_all_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # A wheel without its package data must not call an empty database up to date.
    monkeypatch.setattr(migrate, "MIGRATIONS_PACKAGE", "hydra.spec")  # a package without .sql

    with pytest.raises(migrate.MigrationError, match=r"no migrations found in hydra\.spec"):
        migrate.all_migrations.__wrapped__()


def test_no_transaction_migrations_build_indexes_concurrently_and_resumably() -> None:
    # Run again after an interruption, each statement must find its own remains.
    outside = [migration for migration in all_migrations() if not migration.transactional]
    names = [migration.name for migration in outside]
    assert names == ["0004_add_claim_indexes.sql", "0010_add_retention.sql"]
    for migration in outside:
        for statement in migration.statements():
            code = migrate._without_comments(statement).upper()
            resumable = ("CONCURRENTLY IF NOT EXISTS", "CREATE TABLE IF NOT EXISTS", "DO NOTHING")
            assert any(mark in code for mark in resumable), (migration.name, statement)
