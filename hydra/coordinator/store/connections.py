"""How the coordinator connects to PostgreSQL, and how it gives up on a hung one.

Every connection (the pools, the LISTEN connection, migrations) gets libpq's
``connect_timeout`` and TCP keepalives, unless the operator's conninfo
(``HYDRA_DB``) sets them already: a server that stopped answering is noticed
in seconds, not after the kernel's two hours. A server that is frozen (SIGSTOP,
a stuck storage) keeps its sockets open and cannot enforce its own
``statement_timeout``, so a transaction also has a deadline on the client:
when it passes, the connection's socket is shut down, the query in flight fails
at once and the pool discards the connection (psycopg's own cancellation would
first ask the frozen server to cancel, and wait for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

#: libpq parameters every connection gets unless the conninfo sets them. An
#: idle connection to a vanished server is dropped after 10 + 3 * 5 seconds.
CONNECTION_DEFAULTS: Mapping[str, str] = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}


def with_defaults(conninfo: str) -> str:
    """`conninfo` with `CONNECTION_DEFAULTS` added where it says nothing.

    Raises:
        psycopg.ProgrammingError: `conninfo` is not a valid conninfo string or URI.
    """
    given = conninfo_to_dict(conninfo)
    missing = {name: value for name, value in CONNECTION_DEFAULTS.items() if name not in given}
    return make_conninfo(conninfo, **missing)


class DeadlineExceeded(psycopg.OperationalError):
    """The database did not answer before the deadline."""


class Deadline:
    """For the block: sever `conn` when `seconds` pass (None: never) or `expire` is
    called; what failed because of it raises DeadlineExceeded with the reason."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], seconds: float | None) -> None:
        self._conn = conn
        self._seconds = seconds
        self._timer: asyncio.TimerHandle | None = None
        self._reason: str | None = None

    def expire(self, reason: str | None = None) -> None:
        """Sever the connection now."""
        if self._reason is None:
            self._reason = reason or f"the database did not answer within {self._seconds:g}s"
        sever(self._conn)

    def __enter__(self) -> Deadline:
        if self._seconds is not None:
            self._timer = asyncio.get_running_loop().call_later(self._seconds, self.expire)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: Any
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._reason is not None and isinstance(error, psycopg.OperationalError):
            raise DeadlineExceeded(self._reason) from error


def sever(conn: psycopg.AsyncConnection[Any]) -> None:
    """Shut down the connection's socket: whatever waits on it fails now, and the
    connection is broken for good (the pool discards it when it comes back).

    The socket is shut down, not closed, so psycopg still owns its descriptor."""
    if conn.closed:
        return
    # fromfd duplicates the descriptor; shutdown acts on the socket itself.
    with (
        contextlib.suppress(OSError),
        socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as duplicate,
    ):
        duplicate.shutdown(socket.SHUT_RDWR)
