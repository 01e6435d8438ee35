"""The audit entry a handler starts from: who and from where, as the call tells."""

from __future__ import annotations

from hydra.coordinator.api.audit import MAX_NAME, call_entry, clipped
from hydra.coordinator.api.caller import ANONYMOUS, Caller, bound
from hydra.domain import AuditEntry, Role


class _Call:
    """The one thing call_entry reads of a grpc.aio ServicerContext."""

    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer


def test_the_entry_names_the_bound_caller_and_the_peer() -> None:
    ci = Caller(name="ci-deploy", role=Role.OPERATOR, scope="billing.")
    with bound(ci):
        entry = call_entry(_Call("ipv4:10.0.0.7:41000"), "RunService/Trigger", task="billing.x")
    assert entry == AuditEntry(
        who="ci-deploy",
        role="operator",
        action="RunService/Trigger",
        task="billing.x",
        peer="ipv4:10.0.0.7:41000",
    )


def test_without_authentication_the_caller_is_anonymous_and_empty_fields_are_none() -> None:
    entry = call_entry(_Call("ipv6:[::1]:5000"), "RunService/Retry", task="", run_id="")
    assert (entry.who, entry.role) == (ANONYMOUS.name, "admin")
    assert (entry.task, entry.run_id, entry.outcome) == (None, None, "OK")


def test_an_invalid_requests_long_names_are_clipped() -> None:
    entry = call_entry(_Call(""), "TaskService/Apply", task="x" * 100_000)
    assert entry.task is not None and len(entry.task) == MAX_NAME
    assert entry.task.endswith("...")
    assert clipped("short", MAX_NAME) == "short" and clipped(None, 5) == ""
