"""Errors shared by the coordinator, the agent and the client.

Each maps to one gRPC status code; the coordinator turns them into statuses at
the edge and the client turns statuses back into them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class HydraError(Exception):
    """Hydra failed."""

    #: Name of the grpc.StatusCode this error travels as.
    status_code_name = "UNKNOWN"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__ or type(self).__name__)

    @property
    def message(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, kw_only=True, slots=True)
class FieldProblem:
    """One thing wrong with one field, e.g. ``triggers[0].cron``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidArgument(HydraError):
    """The request is invalid."""

    status_code_name = "INVALID_ARGUMENT"

    def __init__(self, problems: Sequence[FieldProblem] | str, path: str = "") -> None:
        if isinstance(problems, str):
            problems = [FieldProblem(path=path, message=problems)]
        self.problems: tuple[FieldProblem, ...] = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


class NotFound(HydraError):
    """Not found."""

    status_code_name = "NOT_FOUND"


class AlreadyExists(HydraError):
    """Already exists."""

    status_code_name = "ALREADY_EXISTS"


class FailedPrecondition(HydraError):
    """The request does not fit the current state."""

    status_code_name = "FAILED_PRECONDITION"


class Unavailable(HydraError):
    """The service is unavailable; try again."""

    status_code_name = "UNAVAILABLE"


class ResourceExhausted(HydraError):
    """A limit of the coordinator was reached; try again later or elsewhere."""

    status_code_name = "RESOURCE_EXHAUSTED"


class Unauthenticated(HydraError):
    """No valid credential: send `authorization: Bearer <secret>` (HYDRA_TOKEN)."""

    status_code_name = "UNAUTHENTICATED"


class PermissionDenied(HydraError):
    """The credential may not make this call."""

    status_code_name = "PERMISSION_DENIED"


ERRORS_BY_STATUS: dict[str, type[HydraError]] = {
    cls.status_code_name: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Unavailable,
        ResourceExhausted,
        Unauthenticated,
        PermissionDenied,
    )
}
