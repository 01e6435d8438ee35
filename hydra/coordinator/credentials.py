"""Creating, listing and revoking credentials: the rules, and plain functions for
the CredentialService, the operator's bootstrap (`hydra credentials`) and `hydra dev`.

The bootstrap functions take a :class:`Database` or a conninfo: with database
access there is no chicken and egg, the first admin credential is made here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from hydra.coordinator.loops.timing import utcnow
from hydra.coordinator.store import Database, Transaction, audit, open_pool
from hydra.coordinator.store import credentials as store
from hydra.domain import (
    AuditEntry,
    Credential,
    NewCredential,
    Role,
    agent_id_problem,
    credential_name_problem,
)
from hydra.errors import FieldProblem, InvalidArgument

#: created_by of credentials made with database access (`hydra credentials create`).
BOOTSTRAP = "bootstrap"
#: Credentials per page of a listing.
LIST_PAGE = 100
#: The peer of an audit entry made with database access rather than over gRPC.
LOCAL_PEER = "hydra credentials (database access)"


@dataclass(frozen=True, kw_only=True, slots=True)
class CredentialRequest:
    """What a new credential is to be (its secret is made when it is stored)."""

    name: str
    role: Role
    scope: str = ""
    expires_at: datetime | None = None
    agent_id: str | None = None
    labels: Mapping[str, str] | None = field(default=None, hash=False)
    max_capacity: int | None = None


def problems(request: CredentialRequest, *, now: datetime) -> list[FieldProblem]:
    """Everything wrong with a request, each naming its field."""
    found = []
    if (problem := credential_name_problem(request.name)) is not None:
        found.append(FieldProblem(path="name", message=problem))
    found.extend(_agent_problems(request))
    if request.expires_at is not None and request.expires_at <= now:
        found.append(FieldProblem(path="expires_at", message="must be in the future"))
    if request.max_capacity is not None and request.max_capacity < 1:
        found.append(FieldProblem(path="max_capacity", message="must be at least 1"))
    return found


def _agent_problems(request: CredentialRequest) -> list[FieldProblem]:
    if request.role is not Role.AGENT:
        extra: dict[str, object] = {
            "agent_id": request.agent_id,
            "labels": request.labels,
            "max_capacity": request.max_capacity,
        }
        return [
            FieldProblem(path=name, message="only for role agent")
            for name, value in extra.items()
            if value is not None
        ]
    if request.scope:
        return [FieldProblem(path="scope", message="agent credentials have no scope")]
    if not request.agent_id:
        return [FieldProblem(path="agent_id", message="required for role agent")]
    if (problem := agent_id_problem(request.agent_id)) is not None:
        return [FieldProblem(path="agent_id", message=problem)]
    return []


async def create(
    database: Database,
    request: CredentialRequest,
    created_by: str,
    *,
    audit_entry: AuditEntry | None = None,
) -> NewCredential:
    """Store a new credential; its secret is in the result, and nowhere else.
    `audit_entry` is recorded in the same transaction.

    Raises:
        InvalidArgument: naming every field that is wrong.
        AlreadyExists: the name is taken.
    """
    if found := problems(request, now=utcnow()):
        raise InvalidArgument(found)
    async with database.transaction() as tx:
        created = await store.create(
            tx,
            name=request.name,
            role=request.role,
            created_by=created_by,
            scope=request.scope,
            expires_at=request.expires_at,
            agent_id=request.agent_id,
            labels=request.labels,
            max_capacity=request.max_capacity,
        )
        await _record(tx, audit_entry, created.credential, "created")
        return created


async def revoke(
    database: Database, name: str, *, audit_entry: AuditEntry | None = None
) -> Credential:
    """Revoke a credential; `audit_entry` is recorded in the same transaction.

    Raises:
        NotFound: no credential has this name.
    """
    async with database.transaction() as tx:
        revoked = await store.revoke(tx, name)
        await _record(tx, audit_entry, revoked, "revoked")
        return revoked


async def _record(
    tx: Transaction, entry: AuditEntry | None, credential: Credential, verb: str
) -> None:
    if entry is not None:
        detail = f"credential {credential.name} ({credential.role.value}) {verb}"
        await audit.record(tx, replace(entry, detail=detail))


def _local_entry(action: str, created_by: str) -> AuditEntry:
    """The audit entry of a change made with database access (the bootstrap)."""
    return AuditEntry(who=created_by, role="", action=action, peer=LOCAL_PEER)


@contextlib.asynccontextmanager
async def _database(database_or_conninfo: Database | str) -> AsyncIterator[Database]:
    if isinstance(database_or_conninfo, Database):
        yield database_or_conninfo
        return
    pool = open_pool(database_or_conninfo, 1, statement_timeout=10.0)
    await pool.open(wait=True, timeout=30)
    try:
        yield Database(pool)
    finally:
        await pool.close()


async def create_credential(
    database_or_conninfo: Database | str,
    *,
    name: str,
    role: Role,
    created_by: str = BOOTSTRAP,
    scope: str = "",
    expires_at: datetime | None = None,
    agent_id: str | None = None,
    labels: Mapping[str, str] | None = None,
    max_capacity: int | None = None,
) -> NewCredential:
    """Create a credential with database access (the bootstrap; `hydra dev`).

    Raises:
        InvalidArgument: naming every field that is wrong.
        AlreadyExists: the name is taken.
    """
    request = CredentialRequest(
        name=name,
        role=role,
        scope=scope,
        expires_at=expires_at,
        agent_id=agent_id,
        labels=labels,
        max_capacity=max_capacity,
    )
    entry = _local_entry("CredentialService/Create", created_by)
    async with _database(database_or_conninfo) as database:
        return await create(database, request, created_by, audit_entry=entry)


async def list_credentials(
    database_or_conninfo: Database | str, *, include_revoked: bool = False
) -> list[Credential]:
    """Every credential, ordered by name (with database access)."""
    found: list[Credential] = []
    async with _database(database_or_conninfo) as database:
        while True:
            after = found[-1].name if found else ""
            page = await database.run(
                store.list_credentials,
                after=after,
                limit=LIST_PAGE,
                include_revoked=include_revoked,
            )
            found.extend(page)
            if len(page) < LIST_PAGE:
                return found


async def revoke_credential(database_or_conninfo: Database | str, name: str) -> Credential:
    """Revoke a credential (with database access).

    Raises:
        NotFound: no credential has this name.
    """
    entry = _local_entry("CredentialService/Revoke", BOOTSTRAP)
    async with _database(database_or_conninfo) as database:
        return await revoke(database, name, audit_entry=entry)
