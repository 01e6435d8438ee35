"""CredentialService: wire <-> domain, then plain calls (unscoped admins only: roles.py)."""

from __future__ import annotations

from typing import Any

import grpc

from hydra.coordinator import credentials
from hydra.coordinator.api.audit import call_entry, failures_recorded
from hydra.coordinator.api.caller import current
from hydra.coordinator.api.errors import unary
from hydra.coordinator.api.paging import decode_token, encode_token, page_size
from hydra.coordinator.store import Database
from hydra.coordinator.store import credentials as store
from hydra.errors import InvalidArgument
from hydra.v1 import credential_service_pb2 as pb
from hydra.v1 import credential_service_pb2_grpc as pb_grpc
from hydra.wire import credential_to_proto, optional_timestamp, role_from_wire

Context = grpc.aio.ServicerContext[Any, Any]

DEFAULT_PAGE = 100


class CredentialApi(pb_grpc.CredentialServiceServicer):
    """Credentials: create (the secret is shown once), list, revoke."""

    def __init__(self, database: Database) -> None:
        self._db = database

    @unary
    async def Create(
        self, request: pb.CreateCredentialRequest, context: Context
    ) -> pb.CreateCredentialResponse:
        entry = call_entry(context, "CredentialService/Create")
        async with failures_recorded(self._db, entry):
            created = await credentials.create(
                self._db, _request(request), current().name, audit_entry=entry
            )
        return pb.CreateCredentialResponse(
            credential=credential_to_proto(created.credential), secret=created.secret
        )

    @unary
    async def List(
        self, request: pb.ListCredentialsRequest, context: Context
    ) -> pb.ListCredentialsResponse:
        limit = page_size(request.page_size, DEFAULT_PAGE)
        found = await self._db.run(
            store.list_credentials,
            after=decode_token(request.page_token),
            limit=limit + 1,
            include_revoked=request.include_revoked,
        )
        next_token = encode_token(found[limit - 1].name) if len(found) > limit else ""
        return pb.ListCredentialsResponse(
            credentials=[credential_to_proto(c) for c in found[:limit]],
            next_page_token=next_token,
        )

    @unary
    async def Revoke(
        self, request: pb.RevokeCredentialRequest, context: Context
    ) -> pb.RevokeCredentialResponse:
        entry = call_entry(context, "CredentialService/Revoke")
        async with failures_recorded(self._db, entry):
            if not request.name:
                raise InvalidArgument("required", path="name")
            revoked = await credentials.revoke(self._db, request.name, audit_entry=entry)
        return pb.RevokeCredentialResponse(credential=credential_to_proto(revoked))


def _request(message: pb.CreateCredentialRequest) -> credentials.CredentialRequest:
    return credentials.CredentialRequest(
        name=message.name,
        role=role_from_wire(message.role),
        scope=message.scope,
        expires_at=optional_timestamp(message, "expires_at"),
        agent_id=message.agent_id or None,
        labels=dict(message.labels) if message.has_labels or message.labels else None,
        max_capacity=message.max_capacity if message.HasField("max_capacity") else None,
    )
