"""Task scopes: a scoped credential reaches only tasks whose name starts with its scope.

Handlers call these with the task a call is about (or the run's task); the
caller is the one the credential interceptor bound (api/caller.py). Calls that
reach beyond any one task need an unscoped credential: the role table says
which (roles.UNSCOPED_ONLY), and the interceptor enforces it.
"""

from __future__ import annotations

from hydra.coordinator.api.caller import Caller, current
from hydra.domain import After, TaskSpec
from hydra.errors import PermissionDenied


def check_task(task: str) -> None:
    """Refuse a call about `task` unless the caller's scope covers it.

    Raises:
        PermissionDenied: naming the credential, its scope and the task.
    """
    caller = current()
    if not covers(caller, task):
        raise PermissionDenied(
            f"credential {caller.name!r} is limited to tasks under scope {caller.scope!r}; "
            f"task {task!r} is not under it"
        )


def check_spec(spec: TaskSpec) -> None:
    """Refuse a spec outside the caller's scope: its name, and the tasks it runs after."""
    check_task(spec.name)
    for trigger in spec.triggers:
        if isinstance(trigger, After):
            for upstream in trigger.tasks:
                check_task(upstream)


def covers(caller: Caller, task: str) -> bool:
    """Whether `caller` may reach the task named `task`."""
    return task.startswith(caller.scope)


def scoped() -> bool:
    """Whether the caller is limited to a scope (a handler then checks what it finds)."""
    return bool(current().scope)


def scope() -> str:
    """The caller's scope ("" for every task)."""
    return current().scope


def narrowed_prefix(prefix: str) -> str | None:
    """The name prefix a listing uses: the caller's `prefix` within the scope, or None
    when the two cannot both hold (the listing is then empty)."""
    limit = current().scope
    if prefix.startswith(limit):
        return prefix
    if limit.startswith(prefix):
        return limit
    return None
