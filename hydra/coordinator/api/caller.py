"""Who is calling: the identity an authenticated call runs as.

The credential interceptor (api/auth.py) binds a :class:`Caller` for the
duration of each call it lets through; handlers, the scope checks and the audit
log read it with :func:`current`. A coordinator started with ``--insecure``
binds :data:`ANONYMOUS`, which may do everything (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from hydra.domain import Role


@dataclass(frozen=True, kw_only=True, slots=True)
class Caller:
    """The identity behind one call."""

    #: The credential's name (unique), or "anonymous" without authentication.
    name: str
    role: Role
    #: Task-name prefix every call is limited to; "" means every task.
    scope: str = ""
    #: The peer's address as gRPC reports it ("ipv4:127.0.0.1:53412").
    peer: str = ""
    #: For an agent credential: the one agent id it may connect as.
    agent_id: str | None = None
    #: For an agent credential: the labels it must announce (None: any).
    labels: dict[str, str] | None = field(default=None, hash=False)
    #: For an agent credential: the most capacity it may announce (None: any).
    max_capacity: int | None = None


ANONYMOUS = Caller(name="anonymous", role=Role.ADMIN)

_current: ContextVar[Caller] = ContextVar("hydra_caller", default=ANONYMOUS)


def current() -> Caller:
    """The caller of the call being handled (ANONYMOUS outside an authenticated call)."""
    return _current.get()


@contextmanager
def bound(caller: Caller) -> Iterator[Caller]:
    """Run the block as `caller`."""
    reset = _current.set(caller)
    try:
        yield caller
    finally:
        _current.reset(reset)


@dataclass(frozen=True, kw_only=True, slots=True)
class RefusedCall:
    """A call the interceptor refused before its handler ran, for the audit log."""

    #: The full gRPC method name ("/hydra.v1.TaskService/Apply").
    method: str
    #: The credential's identity; None when none was presented or it was unknown.
    caller: Caller | None
    peer: str
    #: "UNAUTHENTICATED" or "PERMISSION_DENIED".
    code: str
    message: str
