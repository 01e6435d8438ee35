"""Applies the schema migrations in ``migrations/`` at the top of the repository
(docs/architecture.md, storage).

They install as the package ``hydra.coordinator.migrations`` (see pyproject's
``package-dir``) and are read through importlib.resources, from the source tree
in an editable install and from site-packages in a wheel.

Migrations are append-only plain-SQL files named ``NNNN_verb_object.sql``. Each
pending one runs in its own transaction and is recorded in
``hydra_schema_migrations`` in the same transaction. The whole run holds a
PostgreSQL advisory lock, so coordinators starting at once apply each migration
exactly once: the others wait, then find nothing left to do. A file must
therefore hold no statement that cannot run in a transaction (``CREATE INDEX
CONCURRENTLY``, ``VACUUM``).
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import psycopg
from psycopg.rows import TupleRow

from hydra.errors import HydraError

log = logging.getLogger(__name__)

MIGRATIONS_PACKAGE = "hydra.coordinator.migrations"
FILE_NAME = re.compile(r"^(?P<version>\d{4})_[a-z0-9_]+\.sql$")
# pg_advisory_lock key, the same for every Hydra: the bytes of "hydramig".
LOCK_KEY = 0x687964726D6967

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS hydra_schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""
TABLE_EXISTS = "SELECT to_regclass('hydra_schema_migrations') IS NOT NULL"
SELECT_APPLIED = "SELECT version, name FROM hydra_schema_migrations ORDER BY version"
INSERT_APPLIED = "INSERT INTO hydra_schema_migrations (version, name) VALUES (%s, %s)"


class MigrationError(HydraError):
    """The database schema cannot be migrated."""

    status_code_name = "FAILED_PRECONDITION"


class SchemaTooNew(MigrationError):
    """The database schema is newer than this Hydra; upgrade Hydra."""


class MigrationMismatch(MigrationError):
    """A migration recorded in the database differs from the one this Hydra ships."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str  # the file name, e.g. "0001_create_schema.sql"

    @property
    def sql(self) -> bytes:
        """The file's SQL; bytes, which psycopg sends as they are."""
        return _migrations_dir().joinpath(self.name).read_bytes()


@functools.cache
def all_migrations() -> tuple[Migration, ...]:
    """Every migration this Hydra ships, in version order.

    Raises:
        MigrationError: there are none, a file is misnamed, or versions repeat or leave a gap.
    """
    migrations = sorted(
        _parse_name(entry.name)
        for entry in _migrations_dir().iterdir()
        if entry.name.endswith(".sql")
    )
    if not migrations:
        # A build that lost its package data would otherwise call any database up to date.
        raise MigrationError(
            f"no migrations found in {MIGRATIONS_PACKAGE}: Hydra is installed badly"
        )
    for expected, (version, name) in enumerate(migrations, start=1):
        if version != expected:
            raise MigrationError(
                f"migration {name} breaks the sequence 0001, 0002, ...: expected {expected:04d}"
            )
    return tuple(Migration(version=version, name=name) for version, name in migrations)


async def pending(conninfo: str) -> list[str]:
    """Names of the migrations the database at `conninfo` lacks, in order; changes nothing.

    Raises:
        SchemaTooNew: the database has a migration this Hydra does not know.
        MigrationMismatch: a recorded migration has another name than the file.
    """
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        applied = await _applied(conn) if await _table_exists(conn) else {}
    return [migration.name for migration in _plan(applied)]


async def migrate(conninfo: str) -> list[str]:
    """Bring the database at `conninfo` up to date, under the advisory lock.

    Returns:
        Names of the migrations this call applied, in order (empty if none).

    Raises:
        SchemaTooNew: the database has a migration this Hydra does not know.
        MigrationMismatch: a recorded migration has another name than the file.
        psycopg.Error: a migration failed; it and later ones are not applied.
    """
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        # A session lock: closing the connection releases it, also on errors.
        await conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        await conn.execute(CREATE_TABLE)
        todo = _plan(await _applied(conn))
        for migration in todo:
            await _apply(conn, migration)
    return [migration.name for migration in todo]


def _migrations_dir() -> Traversable:
    return resources.files(MIGRATIONS_PACKAGE)


def _parse_name(name: str) -> tuple[int, str]:
    match = FILE_NAME.match(name)
    if match is None:
        raise MigrationError(f"migration file {name!r} is not named NNNN_verb_object.sql")
    return int(match["version"]), name


def _plan(applied: dict[int, str]) -> list[Migration]:
    """The migrations to apply, after checking the recorded ones against the files."""
    known = {migration.version: migration for migration in all_migrations()}
    newest = max(applied, default=0)
    if newest > len(known):
        raise SchemaTooNew(
            f"database schema is at {newest:04d}, this Hydra knows up to {len(known):04d}; "
            "upgrade Hydra"
        )
    for version, name in applied.items():
        if known[version].name != name:
            raise MigrationMismatch(
                f"database has migration {version:04d} applied as {name!r}, "
                f"but this Hydra ships {known[version].name!r}; migrations must never change"
            )
    return [migration for version, migration in known.items() if version not in applied]


async def _table_exists(conn: psycopg.AsyncConnection[TupleRow]) -> bool:
    row = await (await conn.execute(TABLE_EXISTS)).fetchone()
    return bool(row and row[0])


async def _applied(conn: psycopg.AsyncConnection[TupleRow]) -> dict[int, str]:
    rows = await (await conn.execute(SELECT_APPLIED)).fetchall()
    return {version: name for version, name in rows}


async def _apply(conn: psycopg.AsyncConnection[TupleRow], migration: Migration) -> None:
    async with conn.transaction():
        await conn.execute(migration.sql)
        await conn.execute(INSERT_APPLIED, (migration.version, migration.name))
    log.info("applied migration %s", migration.name)
