"""The audit log at the edge: the entry each mutating handler starts from, the
record of a call that failed, and AuditService.

A mutating handler builds its call's entry with :func:`call_entry` and passes it
to the operation (``specs.apply_spec(..., audit_entry=entry)``), which records it
in the transaction of the change. If the call fails instead, its transaction
rolled back and took no entry with it: :func:`failures_recorded` records one in
a transaction of its own, with the status code name as the outcome.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from typing import Any

import grpc

from hydra.coordinator.api import caller
from hydra.coordinator.api.errors import unary
from hydra.coordinator.api.paging import decode_token, encode_token, page_size
from hydra.coordinator.store import Database, audit
from hydra.domain import AuditEntry
from hydra.errors import HydraError, InvalidArgument
from hydra.v1 import audit_service_pb2 as pb
from hydra.v1 import audit_service_pb2_grpc as pb_grpc
from hydra.wire import audit_entry_to_proto, optional_timestamp

log = logging.getLogger("hydra.coordinator.api")

Context = grpc.aio.ServicerContext[Any, Any]

DEFAULT_PAGE = 100
#: Longest task name or run id kept in an entry (valid ones are far shorter; an
#: invalid request's may be anything).
MAX_NAME = 256
#: Longest detail kept in an entry (a failed call's message may list many problems).
MAX_DETAIL = 2000
#: What a failed call that was no HydraError is recorded with (it is logged).
_INTERNAL = ("INTERNAL", "internal error; see coordinator log")


def call_entry(
    context: Context, action: str, *, task: str | None = None, run_id: str | None = None
) -> AuditEntry:
    """The audit entry of the call being handled, as far as the request tells:
    who (the bound caller), the action ("TaskService/Apply"), the peer."""
    who = caller.current()
    return AuditEntry(
        who=who.name,
        role=who.role.value,
        action=action,
        task=clipped(task, MAX_NAME) or None,
        run_id=clipped(run_id, MAX_NAME) or None,
        peer=context.peer() or who.peer,
    )


def clipped(text: str | None, limit: int) -> str:
    """`text` ('' for None), cut to `limit` characters with a marker if longer."""
    text = text or ""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


@contextlib.asynccontextmanager
async def failures_recorded(database: Database, entry: AuditEntry | None) -> AsyncIterator[None]:
    """Record the call as failed if the block raises (then re-raise); None: record nothing."""
    try:
        yield
    except HydraError as error:
        await _record_failure(database, entry, error.status_code_name, error.message)
        raise
    except Exception:
        await _record_failure(database, entry, *_INTERNAL)
        raise


async def _record_failure(
    database: Database, entry: AuditEntry | None, outcome: str, detail: str
) -> None:
    if entry is None:
        return
    try:
        failed = replace(entry, outcome=outcome, detail=clipped(detail, MAX_DETAIL))
        await database.run(audit.record, failed)
    except HydraError as error:  # the database is down: the call's own error says so
        log.warning("could not record the failed %s in the audit log: %s", entry.action, error)


class AuditApi(pb_grpc.AuditServiceServicer):
    """The audit log, for admins."""

    def __init__(self, database: Database) -> None:
        self._db = database

    @unary
    async def List(self, request: pb.ListAuditRequest, context: Context) -> pb.ListAuditResponse:
        limit = page_size(request.page_size, DEFAULT_PAGE)
        found = await self._db.run(
            audit.list_entries,
            since=optional_timestamp(request, "since"),
            who=request.who,
            task=request.task,
            after=_cursor(request.page_token),
            limit=limit + 1,
        )
        token = _token(found[limit - 1]) if len(found) > limit else ""
        return pb.ListAuditResponse(
            entries=[audit_entry_to_proto(e) for e in found[:limit]], next_page_token=token
        )


def _token(last: AuditEntry) -> str:
    assert last.at is not None
    return encode_token(f"{last.at.isoformat()}|{last.id}")


def _cursor(token: str) -> tuple[datetime, int] | None:
    if not token:
        return None
    at, _, entry_id = decode_token(token).partition("|")
    try:
        return datetime.fromisoformat(at), int(entry_id)
    except ValueError:
        raise InvalidArgument("malformed page token", path="page_token") from None
