"""The database and its transactions: the one way the store's areas reach PostgreSQL.

A :class:`Transaction` is what every function of the store's areas takes: it
runs named queries, collects what to announce when it commits (changed runs
for watchers, work for the dispatchers) and what to do once it has committed or
rolled back (offer the runs it leased, give back reserved slots). The
dispatcher leases work inside the transaction that made it available through
those after-commit steps (see ``Dispatcher.lease_available``).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from hydra.coordinator.metrics import CoordinatorMetrics, TransactionMetrics
from hydra.coordinator.store.connections import Deadline, with_defaults
from hydra.coordinator.store.queries import query
from hydra.coordinator.store.rows import SpecCache
from hydra.domain import Task, TaskSpec
from hydra.errors import Unavailable

Row = dict[str, Any]
Cursor = psycopg.AsyncCursor[Row]
P = ParamSpec("P")
T = TypeVar("T")

#: The server rolled a transaction back to break a deadlock or a serialization
#: conflict, or a lock was not granted within the transaction's lock_timeout.
CONFLICTS = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.LockNotAvailable,
)

#: Tasks a Database remembers for Trigger (see Database.recent_tasks).
RECENT_TASKS = 1024

#: Run ids per notification: 37 bytes each stays under PostgreSQL's 8000-byte payload.
_IDS_PER_NOTIFY = 200


#: Set a connection's statement_timeout, unless the operator set one (in HYDRA_DB's
#: ``options``, or for the role or the database): theirs wins.
_SET_STATEMENT_TIMEOUT = (
    "SELECT set_config('statement_timeout', %s, false)"
    " WHERE current_setting('statement_timeout') = '0'"
)


def _configurer(
    statement_timeout: float | None,
) -> Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]:
    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute("SET TIME ZONE 'UTC'")
        if statement_timeout is not None:
            milliseconds = f"{round(statement_timeout * 1000)}ms"
            await conn.execute(_SET_STATEMENT_TIMEOUT, (milliseconds,))

    return configure


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


def open_pool(
    conninfo: str,
    size: int,
    *,
    statement_timeout: float | None = None,
    wait: float = 2.0,
    name: str = "hydra",
) -> AsyncConnectionPool:
    """A pool of autocommit connections in UTC; transactions are explicit.

    Args:
        statement_timeout: seconds the server lets one statement run (None: the
            server's setting); an operator's own setting wins.
        wait: seconds a transaction waits for a free connection, then Unavailable.
    """
    return AsyncConnectionPool(
        with_defaults(conninfo),
        min_size=min(2, size),
        max_size=size,
        kwargs={"autocommit": True},
        configure=_configurer(statement_timeout),
        check=_check,
        open=False,
        timeout=wait,
        name=name,
    )


class Transaction:
    """One open transaction: named queries, and what happens when it ends."""

    def __init__(
        self, cursor: Cursor, specs: SpecCache, metrics: TransactionMetrics | None = None
    ) -> None:
        self.cursor = cursor
        self._specs = specs
        #: What this transaction counts; recorded once it commits.
        self.metrics = metrics if metrics is not None else CoordinatorMetrics().transaction()
        #: Some change made work available: dispatchers should look for it.
        self.made_work_available = False
        #: This coordinator's dispatcher leased in this transaction already.
        self.dispatched = False
        self._changed_runs: list[str] = []
        self._after_commit: list[Callable[[], Awaitable[None] | None]] = []
        self._after_rollback: list[Callable[[], None]] = []

    async def one(self, query_name: str, /, **params: Any) -> Row | None:
        """Run a named query; its first row."""
        await self.cursor.execute(query(query_name), params)
        return await self.cursor.fetchone()

    async def all(self, query_name: str, /, **params: Any) -> list[Row]:
        """Run a named query; every row."""
        await self.cursor.execute(query(query_name), params)
        return await self.cursor.fetchall()

    async def execute(self, query_name: str, /, **params: Any) -> None:
        """Run a named query for its effect (in pipeline mode, not waited for)."""
        await self.cursor.execute(query(query_name), params)

    def spec(self, task_id: int, version: int, stored: Any) -> TaskSpec:
        """The TaskSpec of a stored version (parsed once per database)."""
        return self._specs.get(task_id, version, stored)

    def runs_changed(self, run_ids: Iterable[str]) -> None:
        """Tell watchers these runs changed, once this transaction commits."""
        self._changed_runs.extend(run_ids)

    def work_available(self) -> None:
        """Wake every coordinator's dispatcher once this transaction commits."""
        self.made_work_available = True

    def after_commit(self, step: Callable[[], Awaitable[None] | None]) -> None:
        """Do this once the transaction has committed (in order of registration)."""
        self._after_commit.append(step)

    def after_rollback(self, step: Callable[[], None]) -> None:
        """Do this if the transaction rolls back."""
        self._after_rollback.append(step)

    async def _announce(self, sender: str) -> None:
        runs = list(dict.fromkeys(self._changed_runs))  # each run once, in order
        for start in range(0, len(runs), _IDS_PER_NOTIFY):
            batch = ",".join(runs[start : start + _IDS_PER_NOTIFY])
            await self.execute("notify_run_changed", run_id=batch)
        if self.made_work_available:
            await self.execute("notify_dispatch", sender=sender)

    async def _committed(self) -> None:
        for step in self._after_commit:
            result = step()
            if result is not None:
                await result

    def _rolled_back(self) -> None:
        for step in self._after_rollback:
            step()


class Database:
    """The coordinators' PostgreSQL: a pool, and transactions on it."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        coordinator_id: str = "",
        work_available: asyncio.Event | None = None,
        deadline: float | None = None,
        metrics: CoordinatorMetrics | None = None,
        name: str = "api",
    ) -> None:
        """Transactions on `pool`.

        Args:
            deadline: seconds a transaction may take, from taking its connection
                to its commit; then its connection is severed and it fails
                with Unavailable (None: no deadline).
            metrics: where its transactions count what they do (None: a registry
                of its own, served by nobody).
            name: the pool's label on the transaction latency metric.
        """
        self.pool = pool
        self.deadline = deadline
        #: The coordinator's metrics (docs/metrics.md).
        self.metrics = metrics if metrics is not None else CoordinatorMetrics()
        self._latency = self.metrics.transaction_duration.labels(name)
        #: Sent with dispatch notifications, so that a coordinator can ignore its own.
        self.coordinator_id = coordinator_id
        #: Set when a committed transaction made work available that this
        #: coordinator's dispatcher did not lease in it (its loop then looks).
        self._work_available = work_available
        #: time.monotonic() of the last failed transaction (the reaper waits a TTL after it).
        self.last_outage = float("-inf")
        #: Why transactions are refused at once (the database is known unreachable).
        self.refused: str | None = None
        #: The severing step of each transaction in flight, by connection.
        self._in_flight: dict[psycopg.AsyncConnection[Any], Callable[[], None]] = {}
        self._specs = SpecCache()
        #: Tasks by name as Trigger read them last (id, task): a trigger of a task
        #: known here skips reading it, and checks its version as it creates the run.
        self.recent_tasks: dict[str, tuple[int, Task]] = {}

    def remember_task(self, name: str, task_id: int, task: Task) -> None:
        """Keep `task` in `recent_tasks` (the last RECENT_TASKS names)."""
        self.recent_tasks.pop(name, None)
        self.recent_tasks[name] = (task_id, task)
        if len(self.recent_tasks) > RECENT_TASKS:
            del self.recent_tasks[next(iter(self.recent_tasks))]

    def refuse(self, reason: str) -> None:
        """The database is unreachable: fail the transactions in flight now, and
        refuse new ones at once until `accept` (instead of letting each wait out
        its deadline)."""
        self.refused = reason
        for expire in list(self._in_flight.values()):
            expire()

    def accept(self) -> None:
        """The database answers again: transactions may begin."""
        self.refused = None

    @contextlib.asynccontextmanager
    async def _deadline(self, conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
        """The transaction's deadline; `refuse` expires it at once."""
        with Deadline(conn, self.deadline) as deadline:
            self._in_flight[conn] = lambda: deadline.expire(self.refused)
            try:
                yield
            finally:
                del self._in_flight[conn]

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """One transaction; database outages and missed deadlines surface as Unavailable.

        It runs in pipeline mode: a statement whose rows are not fetched does
        not wait for its answer, so BEGIN, notifications and plain updates
        cost no round trip of their own; a fetch or the COMMIT waits for all.
        The notifications asked for during the transaction are sent once, at
        its end (PostgreSQL delivers them at commit anyway); its after-commit
        steps run once it has committed.
        """
        if self.refused is not None:
            raise Unavailable(f"database unavailable: {self.refused}")
        tx: Transaction | None = None
        began = time.perf_counter()
        try:
            async with (
                self.pool.connection() as conn,
                self._deadline(conn),
                conn.pipeline(),
                conn.transaction(),
            ):
                tx = Transaction(
                    conn.cursor(row_factory=dict_row), self._specs, self.metrics.transaction()
                )
                yield tx
                await tx._announce(self.coordinator_id)
        except BaseException as error:
            if tx is not None:
                tx._rolled_back()
            if isinstance(error, psycopg.OperationalError | PoolTimeout):
                if not isinstance(error, CONFLICTS):  # the server works: no outage
                    self.last_outage = time.monotonic()
                raise Unavailable(f"database unavailable: {error}") from error
            raise
        self._latency.observe(time.perf_counter() - began)
        tx.metrics.commit()
        if tx.made_work_available and not tx.dispatched and self._work_available is not None:
            self._work_available.set()
        await tx._committed()

    async def run(
        self,
        operation: Callable[Concatenate[Transaction, P], Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """`operation(tx, ...)` in a transaction of its own."""
        async with self.transaction() as tx:
            return await operation(tx, *args, **kwargs)
