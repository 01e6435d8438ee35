"""gRPC statuses as HTTP statuses, and the one error body of the JSON API (docs/http-api.md).

Every failure, the coordinator's or the API's own (bad JSON, a body too large,
a wrong method), is answered with the same JSON shape; nothing else, and never
a traceback, reaches the client.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import grpc
from starlette.responses import JSONResponse

from hydra.errors import FieldProblem, InvalidArgument

#: gRPC status code name -> HTTP status. FAILED_PRECONDITION is 409 Conflict, as
#: ALREADY_EXISTS: the request conflicts with the state of what it names (412
#: belongs to conditional requests, which this API has none of). The rest follow
#: Google's mapping (google/rpc/code.proto).
HTTP_STATUS: Mapping[str, int] = {
    "OK": 200,
    "INVALID_ARGUMENT": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "FAILED_PRECONDITION": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "UNKNOWN": 500,
    "INTERNAL": 500,
    "DATA_LOSS": 500,
}

#: One problem of an INVALID_ARGUMENT message: ``triggers[0].cron: bad expression``
#: (hydra.errors.FieldProblem's form; problems are joined with "; ").
_PROBLEM = re.compile(
    r"^(?P<path>--?[\w-]+|[\w-]+(?:\[\d+\])*(?:\.[\w-]+(?:\[\d+\])*)*): (?P<m>.+)$"
)


class ApiError(Exception):
    """A failed request, as the client is told."""

    def __init__(
        self,
        *,
        status: int,
        code: str,
        message: str,
        problems: tuple[FieldProblem, ...] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        #: The gRPC status code name (the API's own failures use the closest one).
        self.code = code
        self.message = message
        self.problems = problems
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=dict(self.headers))

    def body(self) -> dict[str, Any]:
        """``{"error": {"code", "message", "field"?, "problems"?}}``: ``field`` is the
        first problem's path, ``problems`` all of them."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        named = [problem for problem in self.problems if problem.path]
        if named:
            error["field"] = named[0].path
            error["problems"] = [{"field": p.path, "message": p.message} for p in self.problems]
        return {"error": error}


def api_error(code: str, message: str, **extra: Any) -> ApiError:
    """The error for gRPC status ``code``, with the headers it needs (401 says
    how to authenticate)."""
    status = HTTP_STATUS.get(code, 500)
    headers = {"WWW-Authenticate": 'Bearer realm="hydra"'} if status == 401 else {}
    headers.update(extra.pop("headers", {}))
    return ApiError(status=status, code=code, message=message, headers=headers, **extra)


def invalid(error: InvalidArgument) -> ApiError:
    """A 400 naming every field of ``error``."""
    return api_error("INVALID_ARGUMENT", error.message, problems=error.problems)


def from_rpc_error(error: grpc.aio.AioRpcError) -> ApiError:
    """The coordinator's answer, with its own message; INVALID_ARGUMENT's fields
    are read back from it."""
    code = error.code().name
    message = error.details() or code
    problems = field_problems(message) if code == "INVALID_ARGUMENT" else ()
    return api_error(code, message, problems=problems)


def field_problems(message: str) -> tuple[FieldProblem, ...]:
    """The problems of a coordinator's INVALID_ARGUMENT message; a part naming no
    field continues the one before it (a message may hold "; " itself)."""
    problems: list[FieldProblem] = []
    for part in message.split("; "):
        found = _PROBLEM.match(part)
        if found:
            problems.append(FieldProblem(path=found["path"], message=found["m"]))
        elif problems:
            last = problems[-1]
            problems[-1] = FieldProblem(path=last.path, message=f"{last.message}; {part}")
        else:
            problems.append(FieldProblem(path="", message=part))
    return tuple(problems)
