"""Whether the database answers: a ``SELECT 1`` on a connection of the probe's own.

Not a pooled connection: a pool that failed to reconnect backs off for longer
and longer, and the probe must see a database that is back at once.
"""

from __future__ import annotations

from typing import Any

import psycopg

from hydra.coordinator.store.connections import Deadline, with_defaults
from hydra.coordinator.store.queries import query
from hydra.errors import Unavailable


class Probe:
    """Asks the database whether it answers, within a deadline."""

    def __init__(self, conninfo: str, deadline: float) -> None:
        self._conninfo = with_defaults(conninfo)
        self._deadline = deadline
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def ping(self) -> None:
        """Return once the database answered.

        Raises:
            Unavailable: it did not answer within the deadline, or refused.
        """
        try:
            conn = await self._connection()
            with Deadline(conn, self._deadline):
                await (await conn.execute(query("ping"))).fetchone()
        except psycopg.OperationalError as error:
            await self.close()
            raise Unavailable(f"database unavailable: {error}") from error

    async def close(self) -> None:
        """Close the probe's connection (the next ping opens another)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            timeout = max(2, round(self._deadline))  # libpq's least connect_timeout is 2
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=timeout
            )
        return self._conn
