"""The migration runner against a real PostgreSQL, and the schema's guarantees."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any, LiteralString
from uuid import UUID

import psycopg
import psycopg.errors
import pytest
from psycopg.rows import TupleRow

from hydra.coordinator import migrate as migrate_module
from hydra.coordinator.migrate import (
    MigrationMismatch,
    SchemaTooNew,
    all_migrations,
    migrate,
    pending,
)

ALL_NAMES = [migration.name for migration in all_migrations()]
OCCURRENCE = datetime(2026, 1, 1, 2, 30, tzinfo=UTC)
lease_tokens = itertools.count(1)


async def recorded(conninfo: str) -> list[tuple[int, str]]:
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        cursor = await conn.execute(
            "SELECT version, name FROM hydra_schema_migrations ORDER BY version"
        )
        return await cursor.fetchall()


async def test_schema_builds_from_all_migrations(empty_db_conninfo: str) -> None:
    assert await pending(empty_db_conninfo) == ALL_NAMES

    assert await migrate(empty_db_conninfo) == ALL_NAMES

    assert await recorded(empty_db_conninfo) == [(m.version, m.name) for m in all_migrations()]
    assert await pending(empty_db_conninfo) == []
    async with await psycopg.AsyncConnection.connect(empty_db_conninfo) as conn:
        cursor = await conn.execute(
            "SELECT to_regclass('hydra_runs'), to_regclass('hydra_attempts_one_success')"
        )
        assert await cursor.fetchone() == ("hydra_runs", "hydra_attempts_one_success")


async def test_second_migrate_applies_nothing(empty_db_conninfo: str) -> None:
    await migrate(empty_db_conninfo)

    assert await migrate(empty_db_conninfo) == []
    assert len(await recorded(empty_db_conninfo)) == len(ALL_NAMES)


#: The first migration of issue 12's era on: each must run again on a schema that has
#: it (tests/hostile/test_online_migrations.py forgets, not undoes, them).
FIRST_REAPPLIABLE = 7


async def test_migrations_from_0007_on_run_again_on_a_schema_that_has_them(
    db_conninfo: str,
) -> None:
    later = [m for m in all_migrations() if m.version >= FIRST_REAPPLIABLE]
    assert later, "no migration to check"
    async with await psycopg.AsyncConnection.connect(db_conninfo, autocommit=True) as conn:
        for migration in later:
            if migration.transactional:
                async with conn.transaction():
                    await conn.execute(migration.sql)
            else:
                for statement in migration.statements():
                    await conn.execute(statement.encode())


async def test_concurrent_migrates_apply_each_migration_once(empty_db_conninfo: str) -> None:
    results = await asyncio.gather(*(migrate(empty_db_conninfo) for _ in range(5)))

    applied = Counter(name for result in results for name in result)
    assert applied == Counter(ALL_NAMES)
    assert [name for _, name in await recorded(empty_db_conninfo)] == ALL_NAMES


async def test_refuses_a_schema_newer_than_the_code(db_conninfo: str) -> None:
    newer = len(ALL_NAMES) + 4
    async with await psycopg.AsyncConnection.connect(db_conninfo, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO hydra_schema_migrations (version, name) VALUES (%s, %s)",
            (newer, f"{newer:04d}_add_future.sql"),
        )

    expected = (
        f"database schema is at {newer:04d}, this Hydra knows up to {len(ALL_NAMES):04d}; "
        "upgrade Hydra"
    )
    with pytest.raises(SchemaTooNew) as refused:
        await migrate(db_conninfo)
    assert str(refused.value) == expected
    with pytest.raises(SchemaTooNew):
        await pending(db_conninfo)


async def test_refuses_a_renamed_migration(db_conninfo: str) -> None:
    async with await psycopg.AsyncConnection.connect(db_conninfo, autocommit=True) as conn:
        await conn.execute(
            "UPDATE hydra_schema_migrations SET name = '0001_create_other.sql' WHERE version = 1"
        )

    with pytest.raises(MigrationMismatch, match=re.escape("0001_create_other.sql")):
        await migrate(db_conninfo)


async def fetch_value(
    conn: psycopg.AsyncConnection[TupleRow], query: LiteralString, params: tuple[object, ...] = ()
) -> Any:
    """The first column of the one row `query` returns."""
    row = await (await conn.execute(query, params)).fetchone()
    assert row is not None
    return row[0]


async def insert_run(conn: psycopg.AsyncConnection[TupleRow]) -> tuple[int, UUID]:
    """A task with one run; returns (task id, run id)."""
    task_id = await fetch_value(
        conn, "INSERT INTO hydra_tasks (name, version) VALUES ('billing.export', 1) RETURNING id"
    )
    run_id = await fetch_value(
        conn,
        "INSERT INTO hydra_runs (task_id, task_version, occurrence, cause)"
        " VALUES (%s, 1, %s, 'cron') RETURNING id",
        (task_id, OCCURRENCE),
    )
    return task_id, run_id


async def insert_attempt(
    conn: psycopg.AsyncConnection[TupleRow], run_id: UUID, number: int, state: str
) -> None:
    await conn.execute(
        "INSERT INTO hydra_attempts (run_id, number, state, agent_id, lease_token, started_at)"
        " VALUES (%s, %s, %s, 'agent-1', %s, now())",
        (run_id, number, state, next(lease_tokens)),
    )


async def test_at_most_one_succeeded_attempt_per_run(db_conninfo: str) -> None:
    async with await psycopg.AsyncConnection.connect(db_conninfo, autocommit=True) as conn:
        _, run_id = await insert_run(conn)
        await insert_attempt(conn, run_id, 1, "FAILED")
        await insert_attempt(conn, run_id, 2, "SUCCEEDED")

        with pytest.raises(psycopg.errors.UniqueViolation, match="hydra_attempts_one_success"):
            await insert_attempt(conn, run_id, 3, "SUCCEEDED")


async def test_one_run_per_task_and_occurrence(db_conninfo: str) -> None:
    async with await psycopg.AsyncConnection.connect(db_conninfo, autocommit=True) as conn:
        task_id, _ = await insert_run(conn)

        with pytest.raises(psycopg.errors.UniqueViolation, match="occurrence"):
            await conn.execute(
                "INSERT INTO hydra_runs (task_id, task_version, occurrence, cause)"
                " VALUES (%s, 1, %s, 'manual')",
                (task_id, OCCURRENCE),
            )


async def _forget_0009(conninfo: str) -> None:
    """Make migration 0009 (in a transaction; it creates a trigger on hydra_runs) pending again."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("DELETE FROM hydra_schema_migrations WHERE version >= 9")


async def test_a_migration_that_waits_too_long_for_a_lock_tries_again(
    db_conninfo: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A write holding hydra_runs keeps 0009 from its lock: it gives up after the lock
    timeout (not queueing other queries behind it meanwhile), and succeeds once the
    write has committed."""
    monkeypatch.setattr(migrate_module, "LOCK_TIMEOUT", "100ms")
    await _forget_0009(db_conninfo)
    async with await psycopg.AsyncConnection.connect(db_conninfo) as holder:
        await holder.execute("LOCK TABLE hydra_runs IN ROW EXCLUSIVE MODE")
        migrating = asyncio.create_task(migrate(db_conninfo))
        await asyncio.sleep(1.0)  # several tries meanwhile
        assert not migrating.done()
        await holder.commit()
        applied = await asyncio.wait_for(migrating, timeout=30)
    assert applied[0] == "0009_add_notifications.sql"
    assert await pending(db_conninfo) == []
    assert "migration 0009_add_notifications.sql waited over 100ms for a lock" in caplog.text


async def test_a_migration_that_never_gets_its_lock_fails_saying_so(
    db_conninfo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrate_module, "LOCK_TIMEOUT", "50ms")
    monkeypatch.setattr(migrate_module, "LOCK_TRIES", 2)
    await _forget_0009(db_conninfo)
    async with await psycopg.AsyncConnection.connect(db_conninfo) as holder:
        await holder.execute("LOCK TABLE hydra_runs IN ROW EXCLUSIVE MODE")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await migrate(db_conninfo)
        await holder.rollback()
    assert "0009_add_notifications.sql" in await pending(db_conninfo)
    assert await migrate(db_conninfo) != []  # nothing half applied: it goes on from there
