"""Applies the schema migrations in ``migrations/`` at the top of the repository
(docs/architecture.md, storage).

They install as the package ``hydra.coordinator.migrations`` (see pyproject's
``package-dir``) and are read through importlib.resources, from the source tree
in an editable install and from site-packages in a wheel.

Migrations are append-only plain-SQL files named ``NNNN_verb_object.sql``. Each
pending one runs in its own transaction and is recorded in
``hydra_schema_migrations`` in the same transaction. The whole run holds a
PostgreSQL advisory lock, so coordinators starting at once apply each migration
exactly once: the others wait, then find nothing left to do.

A migration whose first line is ``-- hydra: no-transaction`` runs outside a
transaction instead, one statement at a time (statements end with ``;`` at the
end of a line), and is recorded once all of them succeeded. That is how an
index on a big, busy table is built: ``CREATE INDEX CONCURRENTLY`` does not
block writes to the table while it builds, and cannot run in a transaction.
Such a migration may be interrupted half way (a coordinator killed, a
connection lost), so each of its statements must be safe to run again: write
``CREATE INDEX CONCURRENTLY IF NOT EXISTS``; an interrupted build leaves an
INVALID index behind, which the runner drops and builds again.

A migration in a transaction takes its table locks with a ``lock_timeout``
(``LOCK_TIMEOUT``): an ALTER TABLE waiting for a long transaction would
otherwise queue every later query on that table behind it, the hot path's
included. A migration that times out on a lock, or that PostgreSQL picks as a
deadlock's victim against a running coordinator's transaction (it locks several
tables, in its own order), is rolled back and tried again with backoff, up to
``LOCK_TRIES`` times: nothing of it was applied meanwhile.

Waiting for the advisory lock is a loop of ``pg_try_advisory_lock``, not one
blocking ``pg_advisory_lock``: a session blocked in a statement holds a snapshot,
and a concurrent index build waits for every older snapshot to go away, so the
lock holder's build and its waiters would deadlock.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import psycopg
import psycopg.errors
import tenacity
from psycopg import sql
from psycopg.rows import TupleRow

from hydra.coordinator.store.connections import with_defaults
from hydra.errors import HydraError

log = logging.getLogger(__name__)

MIGRATIONS_PACKAGE = "hydra.coordinator.migrations"
FILE_NAME = re.compile(r"^(?P<version>\d{4})_[a-z0-9_]+\.sql$")
# pg_advisory_lock key, the same for every Hydra: the bytes of "hydramig".
LOCK_KEY = 0x687964726D6967
#: Seconds between tries of the advisory lock while another process migrates.
LOCK_POLL_SECONDS = 0.1
#: How long a migration in a transaction waits for one of its locks before trying again.
LOCK_TIMEOUT = "2s"
#: Tries of a migration in a transaction that time out on a lock or lose a deadlock.
LOCK_TRIES = 10
#: The first line of a migration that runs outside a transaction.
NO_TRANSACTION = "-- hydra: no-transaction"
#: A statement ends with ";" at the end of a line.
STATEMENT_END = re.compile(r";[ \t]*(?:\n|$)")
#: An index build whose interrupted remains the runner drops first; group 1 is its name.
CONCURRENT_INDEX = re.compile(
    r"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)",
    re.IGNORECASE,
)

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
TRY_LOCK = "SELECT pg_try_advisory_lock(%s)"
INVALID_INDEX = (
    "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
    " WHERE c.relname = %s AND c.relnamespace = current_schema()::regnamespace"
    " AND NOT i.indisvalid"
)


class MigrationError(HydraError):
    """The database schema cannot be migrated."""

    status_code_name = "FAILED_PRECONDITION"


class SchemaTooNew(MigrationError):
    """The database schema is newer than this Hydra; upgrade Hydra."""


class MigrationMismatch(MigrationError):
    """A migration recorded in the database differs from the one this Hydra ships."""


class SchemaTooOld(MigrationError):
    """The database schema is older than this Hydra; run `hydra migrate`."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str  # the file name, e.g. "0001_create_schema.sql"

    @property
    def sql(self) -> bytes:
        """The file's SQL; bytes, which psycopg sends as they are."""
        return _migrations_dir().joinpath(self.name).read_bytes()

    @property
    def transactional(self) -> bool:
        """Whether it runs in one transaction (unless its first line is NO_TRANSACTION)."""
        first_line = self.sql.decode("utf-8").split("\n", 1)[0]
        return first_line.strip() != NO_TRANSACTION

    def statements(self) -> list[str]:
        """Its statements, in order (each ends with ";" at the end of a line)."""
        chunks = STATEMENT_END.split(self.sql.decode("utf-8"))
        return [chunk.strip() for chunk in chunks if _has_code(chunk)]


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
    async with await _connect(conninfo) as conn:
        applied = await _applied(conn) if await _table_exists(conn) else {}
    return [migration.name for migration in _plan(applied)]


async def check_current(conninfo: str) -> None:
    """Make sure the database at `conninfo` has exactly this Hydra's schema; changes nothing.

    Raises:
        SchemaTooOld: migrations are pending (the message says what to run).
        SchemaTooNew: the database has a migration this Hydra does not know.
        MigrationMismatch: a recorded migration has another name than the file.
    """
    missing = await pending(conninfo)
    if missing:
        newest = len(all_migrations()) - len(missing)
        raise SchemaTooOld(
            f"database schema is at {newest:04d}, this Hydra needs "
            f"{len(all_migrations()):04d} ({len(missing)} pending: {', '.join(missing)}); "
            "run `hydra migrate` (with HYDRA_DB or --db) first, "
            "or start the coordinator without --no-migrate"
        )


async def migrate(conninfo: str) -> list[str]:
    """Bring the database at `conninfo` up to date, under the advisory lock.

    Returns:
        Names of the migrations this call applied, in order (empty if none).

    Raises:
        SchemaTooNew: the database has a migration this Hydra does not know.
        MigrationMismatch: a recorded migration has another name than the file.
        psycopg.Error: a migration failed; it and later ones are not applied.
    """
    async with await _connect(conninfo) as conn:
        # Maintenance: an index build on a big table may take long.
        await conn.execute("SET statement_timeout = 0")
        # A session lock: closing the connection releases it, also on errors.
        await _lock(conn)
        await conn.execute(CREATE_TABLE)
        todo = _plan(await _applied(conn))
        for migration in todo:
            await _apply(conn, migration)
    return [migration.name for migration in todo]


async def _connect(conninfo: str) -> psycopg.AsyncConnection[TupleRow]:
    return await psycopg.AsyncConnection.connect(with_defaults(conninfo), autocommit=True)


async def _lock(conn: psycopg.AsyncConnection[TupleRow]) -> None:
    """Take the advisory lock, trying again while another process holds it."""
    while True:
        row = await (await conn.execute(TRY_LOCK, (LOCK_KEY,))).fetchone()
        if row and row[0]:
            return
        await asyncio.sleep(LOCK_POLL_SECONDS)


def _has_code(chunk: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in chunk.splitlines())


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
    if migration.transactional:
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(_LOCK_CONFLICTS),
            wait=tenacity.wait_random_exponential(multiplier=0.1, max=2.0),
            stop=tenacity.stop_after_attempt(LOCK_TRIES),
            before_sleep=functools.partial(_log_lock_conflict, migration.name),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                    await conn.execute(migration.sql)
                    await conn.execute(INSERT_APPLIED, (migration.version, migration.name))
    else:
        for statement in migration.statements():
            await _drop_invalid_index(conn, statement)
            await conn.execute(statement.encode("utf-8"))
        await conn.execute(INSERT_APPLIED, (migration.version, migration.name))
    log.info("applied migration %s", migration.name)


#: What rolls a migration back to be tried again: a lock it waited too long for, a deadlock.
_LOCK_CONFLICTS = (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected)


def _log_lock_conflict(name: str, state: tenacity.RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    deadlock = isinstance(error, psycopg.errors.DeadlockDetected)
    reason = "lost a deadlock" if deadlock else f"waited over {LOCK_TIMEOUT} for a lock"
    log.warning(
        "migration %s %s (try %d of %d); trying again",
        name,
        reason,
        state.attempt_number,
        LOCK_TRIES,
    )


async def _drop_invalid_index(conn: psycopg.AsyncConnection[TupleRow], statement: str) -> None:
    """Before a concurrent index build: drop what an interrupted build of it left
    (an INVALID index of that name, which IF NOT EXISTS would take for done)."""
    match = CONCURRENT_INDEX.match(_without_comments(statement))
    if match is None:
        return
    name = match[1]
    if await (await conn.execute(INVALID_INDEX, (name,))).fetchone():
        log.warning("index %s was left invalid by an interrupted build; building it again", name)
        await conn.execute(sql.SQL("DROP INDEX CONCURRENTLY {}").format(sql.Identifier(name)))


def _without_comments(statement: str) -> str:
    return "\n".join(line for line in statement.splitlines() if not line.strip().startswith("--"))
