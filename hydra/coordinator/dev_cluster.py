"""What `hydra dev` sets up so that it stays one command with authentication on:
an admin credential and an agent credential in files under HYDRA_HOME (mode
0600), and a context naming its address and the admin credential, so that
hydractl and the SDK reach it without a flag (docs/security.md, defaults).

A restart reuses the credentials whose files still hold a live secret, and makes
new ones (revoking the old) otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from hydra.contexts import Context, save_context
from hydra.coordinator.credentials import create_credential, revoke_credential
from hydra.coordinator.loops.timing import utcnow
from hydra.coordinator.migrate import migrate
from hydra.coordinator.store import Database, open_pool
from hydra.coordinator.store import credentials as store
from hydra.domain import Credential, Role
from hydra.errors import NotFound

log = logging.getLogger("hydra.dev")

#: The context `hydra dev` writes and makes current.
CONTEXT = "dev"
#: created_by of the credentials `hydra dev` makes.
CREATED_BY = "hydra dev"


@dataclass(frozen=True, kw_only=True, slots=True)
class DevCredentials:
    """The files holding the dev admin's and the dev agent's secrets."""

    admin: Path
    agent: Path


def prepare(conninfo: str, home: Path, *, agent_id: str) -> DevCredentials:
    """Migrate the dev database and make sure both credentials exist in files."""
    directory = home / "credentials"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    files = DevCredentials(admin=directory / "admin.token", agent=directory / "agent.token")
    wanted = {
        files.admin: _Wanted(prefix="dev-admin", role=Role.ADMIN),
        files.agent: _Wanted(prefix="dev-agent", role=Role.AGENT, agent_id=agent_id),
    }
    held = {path: _read(path) for path in wanted}
    made = asyncio.run(_ensure(conninfo, wanted, held))
    for path, secret in made.items():
        _write_private(path, secret)
    return files


@dataclass(frozen=True, kw_only=True, slots=True)
class _Wanted:
    """A credential `hydra dev` needs."""

    prefix: str
    role: Role
    agent_id: str | None = None


async def _ensure(
    conninfo: str, wanted: dict[Path, _Wanted], held: dict[Path, str]
) -> dict[Path, str]:
    """The new secrets to write: one for each wanted credential whose file holds none live."""
    await migrate(conninfo)
    pool = open_pool(conninfo, 1, statement_timeout=10.0)
    await pool.open(wait=True, timeout=30)
    try:
        database = Database(pool)
        made = {}
        for path, credential in wanted.items():
            if not await _live(database, held[path], credential):
                made[path] = await _make(database, credential)
        return made
    finally:
        await pool.close()


def write_context(
    path: Path, address: str, credentials: DevCredentials | None, tls_ca: Path | None
) -> Path:
    """Save the context `dev` in the contexts file `path`, as its current one."""
    context = Context(
        coordinators=(address,),
        token_file=credentials.admin if credentials else None,
        tls_ca=tls_ca,
    )
    return save_context(CONTEXT, context, current=True, path=path)


async def _live(database: Database, secret: str, wanted: _Wanted) -> bool:
    """True if `secret` is that of a live credential of the wanted role (and agent);
    a credential that is not is revoked."""
    found: Credential | None = None
    if store.well_formed(secret):
        found = await database.run(store.by_secret, secret)
    if found is None:
        return False
    expired = found.expires_at is not None and found.expires_at <= utcnow()
    usable = found.role is wanted.role and found.agent_id == wanted.agent_id
    if found.revoked_at is None and not expired and usable:
        return True
    with contextlib.suppress(NotFound):
        await revoke_credential(database, found.name)
    return False


async def _make(database: Database, wanted: _Wanted) -> str:
    """Create the credential; its secret."""
    name = f"{wanted.prefix}-{secrets.token_hex(3)}"  # names are never reused, even revoked
    created = await create_credential(
        database, name=name, role=wanted.role, created_by=CREATED_BY, agent_id=wanted.agent_id
    )
    log.info("created %s credential %s", wanted.role.value, name)
    return created.secret


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _write_private(path: Path, secret: str) -> None:
    """Write a secret to `path`, readable by its owner only."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secret + "\n")
    path.chmod(0o600)
