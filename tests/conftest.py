"""Fixtures for every suite: a PostgreSQL server per session, a database per test.

Helpers that are not fixtures live in ``tests/support`` and are imported as
``from support.db import Databases`` (pytest puts ``tests/`` on sys.path for
this conftest); what the tests share with bench/ (processes, waits, ports,
PostgreSQL) is in ``harness/`` at the repository root, also on sys.path.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from harness.postgres import temporary_home
from hydra.coordinator.store import Database, open_pool

from support.db import TEST_DB_ENV, Databases, session_server, to_uri
from support.proc import unique_run_id


def pytest_report_header() -> str:
    """Say which PostgreSQL the session uses."""
    if os.environ.get(TEST_DB_ENV):
        return f"postgresql: {TEST_DB_ENV}"
    return "postgresql: embedded, in a temporary directory (set HYDRA_TEST_DB to use another)"


@pytest.fixture(scope="session")
def pg_admin_conninfo() -> Iterator[str]:
    """Conninfo of the session's server, for creating databases; tests use `db_conninfo`."""
    with session_server() as admin_conninfo:
        yield admin_conninfo


@pytest.fixture(scope="session")
def databases(pg_admin_conninfo: str) -> Iterator[Databases]:
    """Creates and drops the tests' databases."""
    manager = Databases(pg_admin_conninfo)
    yield manager
    manager.close()


@pytest.fixture(scope="session")
def db_template(databases: Databases) -> Iterator[str]:
    """Name of a database with all migrations applied, which test databases copy."""
    name = databases.create_template()
    yield name
    databases.drop(name)


@pytest.fixture
def db_conninfo(databases: Databases, db_template: str) -> Iterator[str]:
    """Conninfo of a migrated database of this test's own, dropped after it."""
    name = databases.create(template=db_template)
    yield databases.conninfo(name)
    databases.drop(name)


@pytest.fixture
def db_url(db_conninfo: str) -> str:
    """The same database as `db_conninfo`, as a ``postgresql://`` URI."""
    return to_uri(db_conninfo)


@pytest.fixture
def empty_db_conninfo(databases: Databases) -> Iterator[str]:
    """Conninfo of an empty database (no migrations) of this test's own, dropped after it."""
    name = databases.create()
    yield databases.conninfo(name)
    databases.drop(name)


@pytest.fixture
def hydra_home() -> Iterator[Path]:
    """An empty directory for HYDRA_HOME that an embedded server (run as root) can use.

    Not under ``tmp_path``: see `harness.postgres.temporary_home`. Stop servers first.
    """
    with temporary_home() as home:
        yield home


@pytest.fixture
def run_id() -> Iterator[str]:
    """A run id prefix unique to the test; no process carrying it may outlive the test."""
    yield from unique_run_id()


@pytest.fixture
async def store(db_conninfo: str) -> AsyncIterator[Database]:
    """The coordinator's store on the test's database."""
    pool = open_pool(db_conninfo, 6)
    await pool.open(wait=True)
    yield Database(pool)
    await pool.close()
