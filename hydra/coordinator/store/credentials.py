"""Credentials: created with a random secret, stored as its hash, looked up by it.

Every function works in the caller's transaction. A secret is
``hydra_`` + 43 URL-safe characters (256 random bits), so a fast standard hash
(SHA-256) is enough, and the prefix lets secret scanners recognise a leaked one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import datetime

from psycopg.types.json import Jsonb

from hydra.coordinator.store.transaction import Row, Transaction
from hydra.domain import Credential, NewCredential, Role
from hydra.errors import AlreadyExists, NotFound

#: What every secret starts with.
SECRET_PREFIX = "hydra_"
#: The length of every secret (the prefix and token_urlsafe(32)).
SECRET_LENGTH = len(SECRET_PREFIX) + 43


def new_secret() -> str:
    """A fresh random secret."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> bytes:
    """What is stored of a secret: its SHA-256."""
    return hashlib.sha256(secret.encode()).digest()


def well_formed(secret: str) -> bool:
    """Whether `secret` could be a Hydra secret at all (checked before any lookup)."""
    return len(secret) == SECRET_LENGTH and secret.startswith(SECRET_PREFIX)


async def create(
    tx: Transaction,
    *,
    name: str,
    role: Role,
    created_by: str,
    scope: str = "",
    expires_at: datetime | None = None,
    agent_id: str | None = None,
    labels: Mapping[str, str] | None = None,
    max_capacity: int | None = None,
) -> NewCredential:
    """Store a new credential; its secret is returned here and never again.

    Raises:
        AlreadyExists: a credential (revoked ones included) has this name.
    """
    secret = new_secret()
    row = await tx.one(
        "insert_credential",
        name=name,
        role=role.value,
        token_hash=secret_hash(secret),
        scope=scope,
        agent_id=agent_id,
        labels=None if labels is None else Jsonb(dict(labels)),
        max_capacity=max_capacity,
        created_by=created_by,
        expires_at=expires_at,
    )
    if row is None:
        raise AlreadyExists(f"a credential named {name!r} exists (revoked ones keep their name)")
    return NewCredential(credential=credential_from_row(row), secret=secret)


async def list_credentials(
    tx: Transaction, *, after: str = "", limit: int = 100, include_revoked: bool = False
) -> list[Credential]:
    """Credentials ordered by name, after `after` (keyset paging)."""
    rows = await tx.all(
        "list_credentials", after=after, limit=limit, include_revoked=include_revoked
    )
    return [credential_from_row(row) for row in rows]


async def revoke(tx: Transaction, name: str) -> Credential:
    """Revoke a credential, and tell every coordinator to drop it from its cache.

    Raises:
        NotFound: no credential has this name.
    """
    row = await tx.one("revoke_credential", name=name)
    if row is None:
        raise NotFound(f"credential {name!r} not found")
    await tx.execute("notify_credential_revoked", name=name)
    return credential_from_row(row)


async def by_secret(tx: Transaction, secret: str) -> Credential | None:
    """The credential of this secret (revoked or expired ones too), or None."""
    digest = secret_hash(secret)
    row = await tx.one("credential_by_token_hash", token_hash=digest)
    if row is None or not hmac.compare_digest(bytes(row["token_hash"]), digest):
        return None
    return credential_from_row(row)


async def live_for_agent(tx: Transaction, agent_id: str) -> Credential | None:
    """The newest live agent credential naming `agent_id` (what a client
    certificate for that id stands for under mTLS), or None."""
    row = await tx.one("live_agent_credential", agent_id=agent_id)
    return None if row is None else credential_from_row(row)


async def touch(tx: Transaction, used: Mapping[str, datetime]) -> None:
    """Record when each credential was last used."""
    names = list(used)
    await tx.execute("touch_credentials", names=names, used_at=[used[n] for n in names])


def credential_from_row(row: Row) -> Credential:
    """A credential from its row (never the hash)."""
    return Credential(
        name=row["name"],
        role=Role(row["role"]),
        scope=row["scope"],
        agent_id=row["agent_id"],
        labels=row["labels"],
        max_capacity=row["max_capacity"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )
