"""Task scopes: a credential scoped to `billing.` reaches only tasks under it, in
every call about a task or a run; listings are limited to the scope."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness.hydra import wait_agents
from hydra.client import After, Client, HydraError, Interval, Task

from support.cluster import AgentProcess, CoordinatorThread
from support.credentials import make_credential

SCOPE_REFUSAL = "limited to tasks under scope 'billing.'"


@pytest.fixture
def clients(db_conninfo: str, tmp_path: Path) -> Iterator[tuple[Client, Client, Client]]:
    """An unscoped admin, an admin and an operator scoped to billing., with two tasks
    of each side applied and run once."""
    coordinator = CoordinatorThread(db_conninfo, name="scopes", insecure=False).start()
    admin = Client(coordinator.address, token=make_credential(db_conninfo, "root", "admin"))
    scoped_admin = Client(
        coordinator.address,
        token=make_credential(db_conninfo, "billing-admin", "admin", scope="billing."),
    )
    scoped_operator = Client(
        coordinator.address,
        token=make_credential(db_conninfo, "billing-ops", "operator", scope="billing."),
    )
    agent_secret = make_credential(db_conninfo, "agent-a", "agent", agent_id="a")
    agent = AgentProcess(
        "a", [coordinator.address], log_path=tmp_path / "agent.log", token=agent_secret
    ).start()
    wait_agents(db_conninfo, ["a"], watched=[agent], timeout=20)
    every = Interval(every=timedelta(hours=1))
    admin.apply(
        [
            Task(name="billing.export", command=["true"], triggers=(every,)),
            Task(name="billing.report", command=["true"]),
            Task(name="hr.payroll", command=["true"], triggers=(every,)),
        ]
    )
    try:
        yield admin, scoped_admin, scoped_operator
    finally:
        agent.stop()
        coordinator.stop()


def _refused(call: object) -> str:
    with pytest.raises(HydraError) as error:
        call()  # type: ignore[operator]
    assert error.value.status_code_name == "PERMISSION_DENIED", error.value.message
    return error.value.message


def test_calls_about_a_task_are_limited_to_the_scope(
    clients: tuple[Client, Client, Client],
) -> None:
    _, scoped_admin, scoped_operator = clients
    assert SCOPE_REFUSAL in _refused(lambda: scoped_admin.apply(Task(name="hr.x", command=["x"])))
    upstream = Task(name="billing.after", command=["x"], triggers=(After(tasks=("hr.payroll",)),))
    assert "'hr.payroll'" in _refused(lambda: scoped_admin.apply(upstream))
    assert scoped_admin.apply(Task(name="billing.new", command=["true"]))[0].changed
    for call in (
        lambda: scoped_operator.get_task("hr.payroll"),
        lambda: scoped_operator.pause("hr.payroll"),
        lambda: scoped_operator.resume("hr.payroll"),
        lambda: scoped_admin.delete_task("hr.payroll"),
        lambda: scoped_operator.trigger("hr.payroll"),
        lambda: scoped_operator.list_runs(task="hr.payroll"),
        lambda: list(scoped_operator.watch(task="hr.payroll")),
        lambda: scoped_operator.backfill(
            "hr.payroll", start=datetime.now(UTC) - timedelta(hours=3), end=datetime.now(UTC)
        ),
    ):
        assert SCOPE_REFUSAL in _refused(call)
    assert scoped_operator.pause("billing.export").paused
    assert scoped_operator.get_task("billing.export").task.name == "billing.export"


def test_calls_about_a_run_are_limited_to_its_task(
    clients: tuple[Client, Client, Client],
) -> None:
    admin, _, scoped_operator = clients
    hr_run, _ = admin.trigger("hr.payroll")
    billing_run, _ = scoped_operator.trigger("billing.report")
    for call in (
        lambda: scoped_operator.get_run(hr_run.id),
        lambda: scoped_operator.retry(hr_run.id),
        lambda: scoped_operator.cancel(hr_run.id),
        lambda: list(scoped_operator.tail_logs(hr_run.id)),
        lambda: list(scoped_operator.watch(run_id=hr_run.id)),
    ):
        assert "task 'hr.payroll' is not under it" in _refused(call)
    assert scoped_operator.wait(billing_run.id, timeout=20).state.terminal
    assert list(scoped_operator.tail_logs(billing_run.id)) == []
    admin.wait(hr_run.id, timeout=20)


def test_listings_are_limited_to_the_scope(clients: tuple[Client, Client, Client]) -> None:
    admin, _, scoped_operator = clients
    admin.trigger("hr.payroll")
    scoped_operator.trigger("billing.report")
    assert [t.name for t in scoped_operator.list_tasks()] == ["billing.export", "billing.report"]
    assert [t.name for t in scoped_operator.list_tasks(prefix="billing.r")] == ["billing.report"]
    assert scoped_operator.list_tasks(prefix="hr.") == []
    assert {r.task for r in scoped_operator.list_runs()} == {"billing.report"}
    assert {r.task for r in admin.list_runs()} == {"billing.report", "hr.payroll"}


def test_calls_beyond_any_task_need_an_unscoped_credential(
    clients: tuple[Client, Client, Client],
) -> None:
    _, scoped_admin, scoped_operator = clients
    for call in (
        lambda: scoped_operator.drain_agent("a"),
        lambda: scoped_admin.list_credentials(),
        lambda: scoped_admin.create_credential("x", "viewer"),
    ):
        assert "needs an unscoped credential" in _refused(call)
    assert [a.id for a in scoped_operator.list_agents()] == ["a"]
    assert scoped_operator.cluster_status().answered_by == "scopes"
