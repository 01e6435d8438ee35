"""The migration files: names, numbering, and that they ship inside the package."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from importlib import resources
from pathlib import Path

from hydra.coordinator.migrate import all_migrations

FILE_NAME = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")
ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIR = ROOT / "hydra" / "coordinator" / "migrations"


def packaged_names() -> list[str]:
    folder = resources.files("hydra.coordinator").joinpath("migrations")
    return sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))


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


def test_package_data_globs_ship_every_migration() -> None:
    # An editable install reads the source tree; the globs decide what a wheel holds.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["hydra.coordinator"]
    sources = sorted(path.name for path in SOURCE_DIR.glob("*.sql"))
    assert sources == packaged_names()
    unshipped = [
        name
        for name in sources
        if not any(fnmatch.fnmatch(f"migrations/{name}", pattern) for pattern in globs)
    ]
    assert unshipped == []


def test_files_are_utf8_sql_without_transaction_control() -> None:
    # Each file runs inside the transaction the runner opens for it.
    for migration in all_migrations():
        text = migration.sql.decode("utf-8")
        statements = {line.strip().upper().rstrip(";") for line in text.splitlines()}
        assert statements.isdisjoint({"BEGIN", "COMMIT", "ROLLBACK"}), migration.name
