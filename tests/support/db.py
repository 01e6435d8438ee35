"""PostgreSQL for tests: one server per session, one database per test.

The server is ``HYDRA_TEST_DB`` (a conninfo or URI of a server where the tests
may create databases) or else an embedded server in a temporary directory
(:func:`harness.postgres.temporary_server`).
Each test gets its own database, cloned from a template that all migrations
were applied to once (``CREATE DATABASE … TEMPLATE``, as procrastinate does).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import secrets
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from typing import Any, ParamSpec, TypeVar
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from harness.postgres import temporary_server
from hydra.coordinator.migrate import migrate

P = ParamSpec("P")
T = TypeVar("T")

TEST_DB_ENV = "HYDRA_TEST_DB"


def session_server() -> AbstractContextManager[str]:
    """The admin conninfo of the session's server: HYDRA_TEST_DB, or a fast embedded one."""
    return temporary_server(os.environ.get(TEST_DB_ENV) or None, fast=True)


class Databases:
    """Creates and drops databases on one server through one admin connection."""

    def __init__(self, admin_conninfo: str) -> None:
        self.admin_conninfo = admin_conninfo
        self._admin = psycopg.connect(admin_conninfo, autocommit=True)
        self._prefix = f"hydra_test_{secrets.token_hex(3)}"
        self._numbers = itertools.count(1)

    def conninfo(self, name: str) -> str:
        """The admin conninfo, pointed at database `name`."""
        return with_dbname(self.admin_conninfo, name)

    def create(self, template: str | None = None) -> str:
        """A new database, empty or copied from `template`; returns its name."""
        name = f"{self._prefix}_{next(self._numbers)}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        self._admin.execute(statement)
        return name

    def create_template(self) -> str:
        """A database with every migration applied, closed to connections; returns its name."""
        name = f"hydra_template_{secrets.token_hex(4)}"
        self._admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        run_coroutine_in_thread(migrate, self.conninfo(name))
        # Cloning fails while anyone is connected to the template; nobody may be.
        self._admin.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name))
        )
        return name

    def drop(self, name: str) -> None:
        """Drop database `name`, closing whatever connections a test left open."""
        self._admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def close(self) -> None:
        """Close the admin connection."""
        self._admin.close()


def with_dbname(conninfo: str, dbname: str) -> str:
    """`conninfo` (key=value or URI) with its database replaced by `dbname`."""
    return make_conninfo(conninfo, dbname=dbname)


def to_uri(conninfo: str) -> str:
    """The ``postgresql://`` URI of a key=value conninfo (or of a URI)."""
    params = conninfo_to_dict(conninfo)
    user = quote(str(params.pop("user", "")), safe="")
    password = params.pop("password", None)
    dbname = quote(str(params.pop("dbname", "")), safe="")
    host = str(params.pop("host", ""))
    port = params.pop("port", None)
    credentials = user + (f":{quote(str(password), safe='')}" if password is not None else "")
    netloc = f"{credentials}@" if credentials else ""
    if host.startswith("/"):  # a socket directory goes in the query string
        params["host"] = host
    else:
        netloc += host + (f":{port}" if port else "")
        port = None
    if port:
        params["port"] = port
    query = urlencode({key: str(value) for key, value in params.items()})
    return f"postgresql://{netloc}/{dbname}" + (f"?{query}" if query else "")


def run_coroutine_in_thread(
    func: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
) -> T:
    """Run ``func(*args, **kwargs)`` in an event loop of its own, in a thread.

    Fixtures run outside the tests' event loops; asyncio.run() here would unset
    the loop that pytest-asyncio made current, so it runs in a thread of its own.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(asyncio.run, func(*args, **kwargs)).result()
