"""Connections and transactions shared by every part of the store."""

from __future__ import annotations

import contextlib
import functools
import json
import select
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from hydra.coordinator.queries import query
from hydra.domain import TaskSpec
from hydra.errors import NotFound, Unavailable
from hydra.spec import task_from_dict

Row = dict[str, Any]
Cursor = psycopg.AsyncCursor[Row]


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute("SET TIME ZONE 'UTC'")


async def _check(conn: psycopg.AsyncConnection[Any]) -> None:
    """Make sure a pooled connection still works before lending it out.

    An idle connection has nothing to read, unless the server closed it (a
    restart, a crash, a terminated backend) and left an error message or EOF
    behind: only then is it worth the round trip of psycopg's own check, which
    raises and makes the pool open a new connection. The check runs for every
    transaction, so it must not cost a round trip each time.
    """
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        await AsyncConnectionPool.check_connection(conn)


def open_pool(conninfo: str, size: int) -> AsyncConnectionPool:
    """A pool of autocommit connections in UTC; transactions are explicit."""
    return AsyncConnectionPool(
        conninfo,
        min_size=min(2, size),
        max_size=size,
        kwargs={"autocommit": True},
        configure=_configure,
        check=_check,
        open=False,
        timeout=2.0,  # a request waits this long for a connection, then UNAVAILABLE
        name="hydra",
    )


#: The server rolled a transaction back to break a deadlock or a serialization
#: conflict, or a lock was not granted within the transaction's lock_timeout.
CONFLICTS = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.LockNotAvailable,
)

#: Run ids per notification: 37 bytes each stays under PostgreSQL's 8000-byte payload.
_IDS_PER_NOTIFY = 200


class Leased(Protocol):
    """Runs leased inside a transaction, to offer once it commits."""

    async def committed(self) -> None:
        """The leases are durable: offer the runs."""

    def aborted(self) -> None:
        """The transaction rolled back: nothing was leased."""


#: Leases what a transaction made available, inside it, before it commits.
InlineDispatch = Callable[[Cursor], Awaitable[Leased | None]]


@dataclass(eq=False)
class _News:
    """Notifications a transaction sends when it ends."""

    runs: list[str] = field(default_factory=list)
    dispatch: bool = False


class BaseStore:
    """Connection handling shared by the store's parts."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        #: time.monotonic() of the last failed transaction (the reaper waits a TTL after it).
        self.last_outage = float("-inf")
        #: Called when a transaction that woke the dispatchers has committed: this
        #: coordinator's own dispatcher need not wait for the notification.
        self.on_dispatch: Callable[[], None] | None = None
        #: Sent with dispatch notifications, so that a coordinator can ignore its own
        #: (it dispatched inline, or called `on_dispatch`, already).
        self.coordinator_id = ""
        #: Called before such a transaction commits, to lease the work it made
        #: available to this coordinator's agents in the same commit.
        self.dispatch_inline: InlineDispatch | None = None
        #: What each open transaction will announce when it commits, by id(cursor).
        self._news: dict[int, _News] = {}

    @contextlib.asynccontextmanager
    async def transaction(self, *, dispatch_inline: bool = True) -> AsyncIterator[Cursor]:
        """One transaction; database outages surface as Unavailable.

        It runs in pipeline mode: a statement whose rows are not fetched does
        not wait for its answer, so BEGIN, notifications and plain updates
        cost no round trip of their own; a fetch or the COMMIT waits for all.
        The notifications asked for during the transaction are sent once, at
        its end (PostgreSQL delivers them at commit anyway). A transaction
        that made work available also leases it to this coordinator's agents
        before it commits (see `dispatch_inline`); the offers go out after.
        """
        news = _News()
        leased: Leased | None = None
        try:
            async with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
                cur = conn.cursor(row_factory=dict_row)
                self._news[id(cur)] = news
                try:
                    yield cur
                    if news.dispatch and dispatch_inline and self.dispatch_inline is not None:
                        leased = await self.dispatch_inline(cur)
                    await self._announce(cur, news)
                finally:
                    del self._news[id(cur)]
        except BaseException as error:
            if leased is not None:
                leased.aborted()
            if isinstance(error, psycopg.OperationalError | PoolTimeout):
                if not isinstance(error, CONFLICTS):  # the server works: no outage
                    self.last_outage = time.monotonic()
                raise Unavailable(f"database unavailable: {error}") from error
            raise
        if leased is not None:
            await leased.committed()
        elif news.dispatch and self.on_dispatch is not None:
            self.on_dispatch()

    async def _announce(self, cur: Cursor, news: _News) -> None:
        runs = list(dict.fromkeys(news.runs))  # each run once, in order
        for start in range(0, len(runs), _IDS_PER_NOTIFY):
            batch = ",".join(runs[start : start + _IDS_PER_NOTIFY])
            await self.run_query(cur, "notify_run_changed", run_id=batch)
        if news.dispatch:
            await self.run_query(cur, "notify_dispatch", sender=self.coordinator_id)

    @staticmethod
    async def one(cur: Cursor, query_name: str, /, **params: Any) -> Row | None:
        """Run a named query; its first row."""
        await cur.execute(query(query_name), params)
        return await cur.fetchone()

    @staticmethod
    async def all(cur: Cursor, query_name: str, /, **params: Any) -> list[Row]:
        """Run a named query; every row."""
        await cur.execute(query(query_name), params)
        return await cur.fetchall()

    def notify_runs_changed(self, cur: Cursor, run_ids: Iterable[str]) -> None:
        """Tell watchers these runs changed, once this transaction commits."""
        self._news[id(cur)].runs.extend(run_ids)

    def notify_dispatch(self, cur: Cursor) -> None:
        """Wake every coordinator's dispatcher once this transaction commits."""
        self._news[id(cur)].dispatch = True

    @staticmethod
    async def run_query(cur: Cursor, query_name: str, /, **params: Any) -> None:
        """Run a named query for its effect."""
        await cur.execute(query(query_name), params)


def run_uuid(run_id: str) -> str:
    """Validate a run id's shape so a typo is NOT_FOUND, not a database error."""
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        raise NotFound(f"run {run_id!r} not found (run ids are UUIDs)") from None


@functools.lru_cache(maxsize=4096)
def _spec_of_version(task_id: int, version: int, spec_json: str) -> TaskSpec:
    return task_from_dict(json.loads(spec_json))


def spec_of_version(task_id: int, version: int, spec: Mapping[str, Any]) -> TaskSpec:
    """The TaskSpec of a stored version. Versions never change, so parsing and
    validating each one once per process is enough (the hot paths read them a lot)."""
    return _spec_of_version(task_id, version, json.dumps(spec, sort_keys=True))
