"""The credentials store against a real database: one test per query, and the
rules of creating a credential."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from hydra.coordinator import credentials
from hydra.coordinator.store import Database
from hydra.coordinator.store import credentials as table
from hydra.domain import Role
from hydra.errors import AlreadyExists, InvalidArgument, NotFound

from support.cluster import Database as Sql


async def test_insert_credential_stores_the_hash_only(store: Database, db_conninfo: str) -> None:
    created = await store.run(
        table.create, name="ci", role=Role.OPERATOR, scope="billing.", created_by="root"
    )
    assert created.secret.startswith("hydra_") and len(created.secret) == table.SECRET_LENGTH
    assert created.credential.role is Role.OPERATOR and created.credential.scope == "billing."
    [row] = Sql(db_conninfo).rows("SELECT * FROM hydra_credentials")
    assert bytes(row["token_hash"]) == hashlib.sha256(created.secret.encode()).digest()
    assert created.secret not in repr(row)
    assert row["created_by"] == "root"


async def test_insert_credential_refuses_a_taken_name(store: Database) -> None:
    await store.run(table.create, name="ci", role=Role.VIEWER, created_by="t")
    with pytest.raises(AlreadyExists, match="'ci'"):
        await store.run(table.create, name="ci", role=Role.ADMIN, created_by="t")


async def test_credential_by_token_hash_finds_the_secret_only(store: Database) -> None:
    created = await store.run(table.create, name="ci", role=Role.VIEWER, created_by="t")
    found = await store.run(table.by_secret, created.secret)
    assert found is not None and found.name == "ci"
    assert await store.run(table.by_secret, table.new_secret()) is None


async def test_list_credentials_is_keyset_paged_and_hides_revoked(store: Database) -> None:
    for name in ("c", "a", "b", "d"):
        await store.run(table.create, name=name, role=Role.VIEWER, created_by="t")
    await store.run(table.revoke, "b")
    first = await store.run(table.list_credentials, limit=2)
    assert [c.name for c in first] == ["a", "c"]
    rest = await store.run(table.list_credentials, after="c", limit=2)
    assert [c.name for c in rest] == ["d"]
    every = await store.run(table.list_credentials, include_revoked=True)
    assert [c.name for c in every] == ["a", "b", "c", "d"]


async def test_revoke_credential_keeps_the_first_time_and_notifies(store: Database) -> None:
    await store.run(table.create, name="ci", role=Role.VIEWER, created_by="t")
    first = await store.run(table.revoke, "ci")
    again = await store.run(table.revoke, "ci")
    assert first.revoked_at is not None and again.revoked_at == first.revoked_at
    with pytest.raises(NotFound, match="'nope'"):
        await store.run(table.revoke, "nope")


async def test_notify_credential_revoked_reaches_listeners(
    store: Database, db_conninfo: str
) -> None:
    import psycopg

    await store.run(table.create, name="ci", role=Role.VIEWER, created_by="t")
    async with await psycopg.AsyncConnection.connect(db_conninfo, autocommit=True) as conn:
        await conn.execute("LISTEN hydra_credentials")
        await store.run(table.revoke, "ci")
        notify = await anext(conn.notifies(timeout=10))
    assert notify.payload == "ci"


async def test_touch_credentials_never_moves_last_used_back(store: Database) -> None:
    await store.run(table.create, name="ci", role=Role.VIEWER, created_by="t")
    later = datetime(2030, 1, 1, tzinfo=UTC)
    await store.run(table.touch, {"ci": later})
    await store.run(table.touch, {"ci": later - timedelta(days=1), "unknown": later})
    [found] = await store.run(table.list_credentials)
    assert found.last_used_at == later


async def test_create_checks_every_field(store: Database) -> None:
    bad = credentials.CredentialRequest(
        name="no spaces",
        role=Role.VIEWER,
        agent_id="a",
        max_capacity=0,
        expires_at=datetime(2000, 1, 1, tzinfo=UTC),
    )
    with pytest.raises(InvalidArgument) as error:
        await credentials.create(store, bad, "t")
    paths = {p.path for p in error.value.problems}
    assert paths == {"name", "agent_id", "max_capacity", "expires_at"}
    agent = credentials.CredentialRequest(name="a", role=Role.AGENT)
    with pytest.raises(InvalidArgument, match="agent_id: required for role agent"):
        await credentials.create(store, agent, "t")


async def test_agent_credentials_bind_an_id_labels_and_capacity(db_conninfo: str) -> None:
    created = await credentials.create_credential(
        db_conninfo,
        name="agent-1",
        role=Role.AGENT,
        agent_id="web-1",
        labels={"pool": "web"},
        max_capacity=4,
    )
    assert created.credential.created_by == credentials.BOOTSTRAP
    [listed] = await credentials.list_credentials(db_conninfo)
    assert (listed.agent_id, dict(listed.labels or {}), listed.max_capacity) == (
        "web-1",
        {"pool": "web"},
        4,
    )
    # Two live credentials may name one agent: rotation without downtime.
    await credentials.create_credential(
        db_conninfo, name="agent-1b", role=Role.AGENT, agent_id="web-1"
    )
    revoked = await credentials.revoke_credential(db_conninfo, "agent-1")
    assert revoked.revoked_at is not None


async def test_live_agent_credential_is_the_newest_live_one_of_the_id(store: Database) -> None:
    await store.run(table.create, name="old", role=Role.AGENT, agent_id="web-1", created_by="t")
    await store.run(table.create, name="new", role=Role.AGENT, agent_id="web-1", created_by="t")
    await store.run(
        table.create,
        name="lapsed",
        role=Role.AGENT,
        agent_id="web-2",
        created_by="t",
        expires_at=datetime.now(UTC) - timedelta(seconds=1),
    )
    found = await store.run(table.live_for_agent, "web-1")
    assert found is not None and found.name == "new"
    await store.run(table.revoke, "new")
    found = await store.run(table.live_for_agent, "web-1")
    assert found is not None and found.name == "old"
    assert await store.run(table.live_for_agent, "web-2") is None  # expired
    assert await store.run(table.live_for_agent, "nobody") is None
