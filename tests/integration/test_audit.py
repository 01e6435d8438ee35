"""The audit log: an entry for every mutating call, in the transaction of the change;
failed calls with their code; dry runs not at all; refused calls through the
batching sink; AuditService.List with its filters and paging, through the SDK and
hydractl. Real PostgreSQL, a real coordinator on 127.0.0.1, real gRPC."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from harness.hydra import Hydractl
from harness.wait import wait_for
from hydra import wire
from hydra.client import Client, Cron, FailedPrecondition, NotFound, Task, Unavailable
from hydra.coordinator.api.caller import Caller, RefusedCall
from hydra.coordinator.loops.refusals import NOT_RECORDED_ACTION, RefusalLog
from hydra.coordinator.store import Database as Store
from hydra.coordinator.store import audit, open_pool
from hydra.domain import AuditEntry, Role
from hydra.v1 import audit_service_pb2 as audit_pb
from hydra.v1 import task_service_pb2 as task_pb
from hydra.v1.audit_service_pb2_grpc import AuditServiceStub
from hydra.v1.task_service_pb2_grpc import TaskServiceStub

from support.agent_double import ScriptedAgent
from support.cluster import CoordinatorThread, Database

TASK = "audit.report"
HOURLY = Task(name=TASK, command=("true",), triggers=(Cron(expression="0 * * * *"),))


@pytest.fixture
def coordinator(db_conninfo: str) -> Iterator[CoordinatorThread]:
    started = CoordinatorThread(db_conninfo, name="audited").start()
    yield started
    started.stop()


@pytest.fixture
def client(coordinator: CoordinatorThread) -> Iterator[Client]:
    with Client(coordinator.address) as connected:
        connected.apply(HOURLY)
        yield connected


# --- every mutating call, in the transaction of its change ---------------------------


@dataclass(frozen=True, kw_only=True)
class Change:
    """What a mutating call was about, and the transaction that changed its row."""

    task: str | None
    run_id: str | None
    detail: str
    #: xmin of the row the call changed, read right after it.
    changed_in: str


def _xmin(db: Database, table: str, column: str, key: str) -> str:
    return str(db.value(f"SELECT xmin::text FROM {table} WHERE {column} = %s", key))


def _of_task(db: Database, detail: str) -> Change:
    """A change of the task's row."""
    return Change(
        task=TASK, run_id=None, detail=detail, changed_in=_xmin(db, "hydra_tasks", "name", TASK)
    )


def _of_run(db: Database, run_id: str, detail: str, *, recorded_run: bool = True) -> Change:
    """A change of a run's row."""
    return Change(
        task=TASK,
        run_id=run_id if recorded_run else None,
        detail=detail,
        changed_in=_xmin(db, "hydra_runs", "id", run_id),
    )


def _apply(client: Client, db: Database, _: str) -> Change:
    client.apply(Task(name=TASK, command=("echo", "v2"), triggers=HOURLY.triggers))
    return _of_task(db, "version 2")


def _delete(client: Client, db: Database, _: str) -> Change:
    # A finished run keeps the deleted task's row: a deleted task with no run left
    # is the pruner's to delete, and the coordinator's first pass may come meanwhile.
    db.rows(
        "INSERT INTO hydra_runs (task_id, task_version, occurrence, cause, state, finished_at) "
        "SELECT id, version, now() - interval '1 day', 'cron', 'SUCCEEDED', now() "
        "FROM hydra_tasks WHERE name = %s RETURNING id",
        TASK,
    )
    client.delete_task(TASK)
    return _of_task(db, "0 queued runs cancelled")


def _pause(client: Client, db: Database, _: str) -> Change:
    client.pause(TASK)
    return _of_task(db, "version 1")


def _resume(client: Client, db: Database, _: str) -> Change:
    client.pause(TASK)
    client.resume(TASK)
    return _of_task(db, "version 1")


def _trigger(client: Client, db: Database, _: str) -> Change:
    run, _ = client.trigger(TASK)
    return _of_run(db, run.id, f"run {run.id}")


def _cancel(client: Client, db: Database, _: str) -> Change:
    run, _ = client.trigger(TASK)
    client.cancel(run.id, reason="wrong day")
    return _of_run(db, run.id, "wrong day")


def _retry(client: Client, db: Database, _: str) -> Change:
    run, _ = client.trigger(TASK)
    client.cancel(run.id)
    client.retry(run.id)
    return _of_run(db, run.id, "now QUEUED")


def _backfill(client: Client, db: Database, _: str) -> Change:
    end = datetime(2025, 1, 31, 3, 0, tzinfo=UTC)
    result = client.backfill(TASK, end - timedelta(hours=2), end)
    return _of_run(db, result.created[0].id, "3 runs, 0 existing", recorded_run=False)


def _drain(client: Client, db: Database, address: str) -> Change:
    with ScriptedAgent(address, "audited-agent") as agent:
        agent.hello()
        client.drain_agent("audited-agent")
        changed_in = _xmin(db, "hydra_agents", "id", agent.agent_id)  # before it disconnects
    detail = "agent audited-agent, 0 active runs"
    return Change(task=None, run_id=None, detail=detail, changed_in=changed_in)


MUTATING: dict[str, Callable[[Client, Database, str], Change]] = {
    "TaskService/Apply": _apply,
    "TaskService/Delete": _delete,
    "TaskService/Pause": _pause,
    "TaskService/Resume": _resume,
    "RunService/Trigger": _trigger,
    "RunService/Retry": _retry,
    "RunService/Cancel": _cancel,
    "RunService/Backfill": _backfill,
    "AgentService/Drain": _drain,
}


def _entries(db: Database, action: str) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT *, xmin::text AS tx FROM hydra_audit WHERE action = %s ORDER BY id", action
    )


@pytest.mark.parametrize("action", list(MUTATING))
def test_every_mutating_call_is_recorded_in_the_transaction_of_its_change(
    action: str, client: Client, coordinator: CoordinatorThread, db_conninfo: str
) -> None:
    db = Database(db_conninfo)
    change = MUTATING[action](client, db, coordinator.address)
    entry = _entries(db, action)[-1]
    assert entry["who"] == "anonymous"  # insecure: every call runs as ANONYMOUS
    assert entry["role"] == "admin"
    assert entry["peer"].startswith("ipv4:127.0.0.1:")
    assert entry["outcome"] == "OK"
    assert (entry["task"], entry["run_id"], entry["detail"]) == (
        change.task,
        change.run_id,
        change.detail,
    )
    assert entry["tx"] == change.changed_in  # the same transaction wrote both


def test_the_entries_of_a_task_tell_its_story_through_the_sdk(client: Client) -> None:
    run, _ = client.trigger(TASK)
    client.cancel(run.id)
    client.pause(TASK)
    story = [(e.action, e.run_id) for e in client.list_audit(task=TASK)]
    assert story == [
        ("TaskService/Pause", None),
        ("RunService/Cancel", run.id),
        ("RunService/Trigger", run.id),
        ("TaskService/Apply", None),
    ]


# --- failed calls, dry runs ---------------------------------------------------------


def test_a_failed_call_is_recorded_with_its_status_code(
    client: Client, coordinator: CoordinatorThread, db_conninfo: str
) -> None:
    db = Database(db_conninfo)
    with pytest.raises(NotFound):
        client.trigger("no.such.task")
    with grpc.insecure_channel(coordinator.address) as channel:
        bad = task_pb.ApplyTaskRequest(spec=wire.task_spec_to_proto(HOURLY))
        del bad.spec.command[:]
        with pytest.raises(grpc.RpcError) as refused:
            TaskServiceStub(channel).Apply(bad)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    [trigger] = _entries(db, "RunService/Trigger")
    assert (trigger["outcome"], trigger["task"]) == ("NOT_FOUND", "no.such.task")
    assert "not found" in trigger["detail"]
    failed_apply = _entries(db, "TaskService/Apply")[-1]
    assert (failed_apply["outcome"], failed_apply["task"]) == ("INVALID_ARGUMENT", TASK)
    assert "spec.command" in failed_apply["detail"]
    assert db.value("SELECT version FROM hydra_tasks WHERE name = %s", TASK) == 1


def test_a_call_the_state_of_things_refuses_is_recorded_with_its_code_not_as_ok(
    client: Client, db_conninfo: str
) -> None:
    db = Database(db_conninfo)
    run, _ = client.trigger(TASK)
    client.cancel(run.id)
    with pytest.raises(FailedPrecondition):
        client.cancel(run.id)  # cancelled already: its transaction rolled back
    outcomes = [e["outcome"] for e in _entries(db, "RunService/Cancel")]
    assert outcomes == ["OK", "FAILED_PRECONDITION"]


def test_dry_runs_are_not_recorded(client: Client, db_conninfo: str) -> None:
    db = Database(db_conninfo)
    before = db.value("SELECT count(*) FROM hydra_audit")
    client.apply(Task(name=TASK, command=("echo", "changed")), dry_run=True)
    end = datetime(2025, 1, 31, 3, 0, tzinfo=UTC)
    client.backfill(TASK, end - timedelta(hours=2), end, dry_run=True)
    assert db.value("SELECT count(*) FROM hydra_audit") == before


# --- the store ----------------------------------------------------------------------


def _entry(**changes: Any) -> AuditEntry:
    fields: dict[str, Any] = {"who": "ci", "role": "operator", "action": "RunService/Trigger"}
    return AuditEntry(**(fields | changes))


async def test_an_entry_rolls_back_with_its_transaction(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await audit.record(tx, _entry(task="t"))
            raise RuntimeError("the change failed")
    found = await store.run(audit.list_entries, since=None, who="", task="", after=None, limit=10)
    assert found == []


async def test_list_filters_and_pages_newest_first(store: Store) -> None:
    await store.run(audit.record, _entry(who="old", task="a"))
    async with store.transaction() as tx:  # one transaction: one time for all
        await audit.record_batch(tx, [_entry(who=f"w{i % 2}", task=f"t{i % 3}") for i in range(9)])
    everything = await store.run(
        audit.list_entries, since=None, who="", task="", after=None, limit=100
    )
    assert [e.id for e in everything] == sorted((e.id for e in everything), reverse=True)
    assert everything[-1].who == "old"
    assert all(e.at is not None and e.outcome == "OK" for e in everything)
    paged: list[AuditEntry] = []
    while len(paged) < len(everything):
        after = (paged[-1].at, paged[-1].id) if paged else None
        page = await store.run(
            audit.list_entries,
            since=None,
            who="",
            task="",
            after=after,
            limit=4,
        )
        assert page
        paged.extend(page)
    assert paged == everything
    by_who = await store.run(
        audit.list_entries, since=None, who="w1", task="", after=None, limit=100
    )
    assert len(by_who) == 4 and {e.who for e in by_who} == {"w1"}
    by_task = await store.run(
        audit.list_entries, since=None, who="", task="t0", after=None, limit=100
    )
    assert len(by_task) == 3
    latest = everything[0].at
    assert latest is not None
    since = await store.run(
        audit.list_entries, since=latest, who="", task="", after=None, limit=100
    )
    assert len(since) == 9


# --- refused calls ------------------------------------------------------------------


def _refused(index: int = 0, *, caller: Caller | None = None) -> RefusedCall:
    return RefusedCall(
        method="/hydra.v1.TaskService/Apply",
        caller=caller,
        peer=f"ipv4:10.0.0.{index % 250}:4000",
        code="UNAUTHENTICATED",
        message="missing or unknown credential",
    )


async def test_refused_calls_are_recorded_in_batches_without_blocking(
    store: Store, db_conninfo: str
) -> None:
    sink = RefusalLog(store, batch=1000, gather=0)
    started = time.monotonic()
    for index in range(2500):
        sink.on_refused(_refused(index))
    assert time.monotonic() - started < 0.5  # queueing only; no database in sight
    assert sink.waiting == 2500
    for _ in range(3):
        await asyncio.wait_for(sink.step(), timeout=10)
    assert sink.waiting == 0
    db = Database(db_conninfo)
    assert db.value("SELECT count(*) FROM hydra_audit WHERE outcome = 'UNAUTHENTICATED'") == 2500
    assert db.value("SELECT count(DISTINCT xmin::text) FROM hydra_audit") == 3  # 3 transactions


async def test_a_full_queue_counts_what_it_drops_and_says_so_when_there_is_room(
    store: Store,
) -> None:
    sink = RefusalLog(store, capacity=100, gather=0)
    for index in range(250):
        sink.on_refused(_refused(index))
    assert (sink.waiting, sink.dropped) == (100, 150)
    await sink.step()
    assert (sink.waiting, sink.dropped) == (0, 0)
    entries = await store.run(
        audit.list_entries, since=None, who="", task="", after=None, limit=1000
    )
    assert len(entries) == 101
    [summary] = [e for e in entries if e.action == NOT_RECORDED_ACTION]
    assert summary.detail == "150 refused calls not recorded"
    assert summary.outcome == "RESOURCE_EXHAUSTED"


async def test_refusals_of_a_failed_batch_are_counted_and_reported_later(store: Store) -> None:
    sink = RefusalLog(store, gather=0)
    for index in range(5):
        sink.on_refused(_refused(index))
    store.refuse("down for the test")  # every transaction fails at once
    sink.on_refused(_refused())  # still queues at once
    with pytest.raises(Unavailable, match="down for the test"):
        await sink.step()
    assert (sink.waiting, sink.dropped) == (0, 6)
    store.accept()
    await sink.step()
    entries = await store.run(
        audit.list_entries, since=None, who="", task="", after=None, limit=1000
    )
    assert [e.detail for e in entries] == ["6 refused calls not recorded"]


async def test_a_refused_call_names_the_caller_it_knew(store: Store) -> None:
    sink = RefusalLog(store, gather=0)
    viewer = Caller(name="dashboards", role=Role.VIEWER)
    sink.on_refused(
        RefusedCall(
            method="/hydra.v1.RunService/Trigger",
            caller=viewer,
            peer="ipv4:10.1.2.3:555",
            code="PERMISSION_DENIED",
            message="RunService/Trigger needs role operator; dashboards is a viewer",
        )
    )
    sink.on_refused(_refused())
    for method in ("/hydra.v1.RunService/List", "/grpc.reflection.v1.ServerReflection/Info"):
        sink.on_refused(replace(_refused(), method=method))  # every method, reads too
    await sink.step()
    denied, unknown, listing, reflection = reversed(
        await store.run(audit.list_entries, since=None, who="", task="", after=None, limit=10)
    )
    assert (denied.who, denied.role, denied.action, denied.outcome) == (
        "dashboards",
        "viewer",
        "RunService/Trigger",
        "PERMISSION_DENIED",
    )
    assert denied.peer == "ipv4:10.1.2.3:555" and "needs role operator" in denied.detail
    assert (unknown.who, unknown.role, unknown.action) == ("", "", "TaskService/Apply")
    assert listing.action == "RunService/List"
    assert reflection.action == "grpc.reflection.v1.ServerReflection/Info"


def test_the_coordinator_records_refusals_and_flushes_them_when_it_stops(
    coordinator: CoordinatorThread, db_conninfo: str
) -> None:
    db = Database(db_conninfo)
    loop = coordinator._loop  # the sink is called on the coordinator's event loop
    loop.call_soon_threadsafe(coordinator.coordinator.refusals.on_refused, _refused(1))
    wait_for(
        lambda: db.value("SELECT count(*) FROM hydra_audit") == 1,
        timeout=10,
        message="the coordinator's loop to record the refusal",
    )
    loop.call_soon_threadsafe(coordinator.coordinator.refusals.on_refused, _refused(2))
    coordinator.stop()  # before the loop's next round: the stop records it
    assert db.value("SELECT count(*) FROM hydra_audit") == 2


# --- AuditService, the SDK and hydractl ---------------------------------------------


async def _seed(store: Store, count: int) -> None:
    async with store.transaction() as tx:
        await audit.record_batch(tx, [_entry(who="bulk", detail=str(i)) for i in range(count)])


def test_the_sdk_pages_through_the_whole_log(
    coordinator: CoordinatorThread, db_conninfo: str
) -> None:
    _run_async(db_conninfo, lambda store: _seed(store, 2300))
    with Client(coordinator.address) as client:
        everything = client.list_audit(limit=None)
        assert len(everything) == 2300
        ids = [e.id for e in everything]
        assert ids == sorted(ids, reverse=True) and len(set(ids)) == 2300
        assert client.list_audit(limit=1500) == everything[:1500]
        assert len(client.list_audit()) == 100
        assert client.list_audit(who="nobody") == []


def test_list_pages_by_token_and_refuses_a_bad_one(
    coordinator: CoordinatorThread, db_conninfo: str
) -> None:
    _run_async(db_conninfo, lambda store: _seed(store, 25))
    with grpc.insecure_channel(coordinator.address) as channel:
        stub = AuditServiceStub(channel)
        seen: list[int] = []
        token = ""
        while True:
            page = stub.List(audit_pb.ListAuditRequest(page_size=10, page_token=token))
            seen.extend(e.id for e in page.entries)
            token = page.next_page_token
            if not token:
                break
        assert len(seen) == 25 == len(set(seen))
        with pytest.raises(grpc.RpcError) as bad:
            stub.List(audit_pb.ListAuditRequest(page_token="bm90IGEgdG9rZW4="))
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in (bad.value.details() or "")


def test_hydractl_audit_list_filters_and_speaks_json(
    client: Client, coordinator: CoordinatorThread
) -> None:
    run, _ = client.trigger(TASK)
    client.apply(Task(name="audit.other", command=("true",)))
    hydractl = Hydractl(coordinator.address)
    shown = hydractl.json("audit", "list", "--task", TASK)
    assert [e["action"] for e in shown] == ["RunService/Trigger", "TaskService/Apply"]
    assert shown[0]["run_id"] == run.id and shown[0]["who"] == "anonymous"
    assert set(shown[0]) == {
        "id", "at", "who", "role", "action", "task", "run_id", "peer", "outcome", "detail"
    }  # fmt: skip
    assert hydractl.json("audit", "list", "--who", "somebody-else") == []
    assert len(hydractl.json("audit", "list", "--since", "10m")) == 3
    assert hydractl.json("audit", "list", "--since", "2999-01-01T00:00Z") == []
    assert len(hydractl.json("audit", "list", "--limit", "1")) == 1
    table = hydractl.ok("audit", "list", "--task", "audit.other").splitlines()
    assert table[0].split()[:4] == ["TIME", "WHO", "ROLE", "ACTION"]
    assert "TaskService/Apply" in table[1] and "audit.other" in table[1]


def _run_async(conninfo: str, work: Callable[[Store], Any]) -> None:
    """Run `work(store)` on a store of the test database, from a synchronous test."""

    async def main() -> None:
        pool = open_pool(conninfo, 2)
        await pool.open(wait=True)
        try:
            await work(Store(pool))
        finally:
            await pool.close()

    asyncio.run(main())
