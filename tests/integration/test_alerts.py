"""Alerts with real parts: a coordinator (in-process gRPC, real PostgreSQL), real
``hydra agent`` processes running real commands, and a real HTTP receiver on
127.0.0.1. Events are recorded in the transaction of their change and delivered
at least once, with their id, payload and signature."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import statistics
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.hydra import Hydractl, coordinator_argv, wait_agents, wait_serving
from harness.net import free_port
from harness.processes import Processes
from harness.wait import wait_for
from hydra.client import (
    After,
    Client,
    FileCheck,
    HydraError,
    Interval,
    NotificationState,
    NotifyEvent,
    Retry,
    SecretRef,
    Task,
    Webhook,
)
from hydra.coordinator.specs import apply_spec
from hydra.coordinator.store import Database as Store
from hydra.coordinator.store import open_pool, outbox
from hydra.coordinator.webhooks import DeliveryConfig

from support.cluster import AgentProcess, CoordinatorThread, Database
from support.credentials import make_credential
from support.receiver import Receiver

FAST = DeliveryConfig(
    timeout=timedelta(seconds=2),
    backoff=timedelta(milliseconds=100),
    max_backoff=timedelta(milliseconds=500),
    lease_margin=timedelta(seconds=1),
    deadline_interval=timedelta(milliseconds=200),
)


@contextlib.contextmanager
def alerting_cluster(
    conninfo: str, tmp_path: Path, notify: DeliveryConfig = FAST, *, agents: int = 1
) -> Iterator[tuple[CoordinatorThread, Client]]:
    """One coordinator delivering with `notify`, agents, and a client."""
    coordinator = CoordinatorThread(conninfo, name="c-alerts", notify=notify).start()
    workers: list[AgentProcess] = []
    try:
        for index in range(agents):
            workers.append(
                AgentProcess(
                    f"agent-{index}", [coordinator.address], log_path=tmp_path / f"a{index}.log"
                ).start()
            )
        wait_agents(conninfo, [w.agent_id for w in workers], watched=workers, timeout=30)
        with Client([coordinator.address]) as client:
            yield coordinator, client
    finally:
        for worker in workers:
            worker.stop()
        coordinator.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


def _hook(url: str | SecretRef, *events: NotifyEvent, **fields: Any) -> Webhook:
    return Webhook(on=events, url=url, **fields)


def _delivered(client: Client, task: str, count: int = 1) -> list[Any]:
    return wait_for(
        lambda: (
            found
            if len(found := client.list_notifications(task=task, state="delivered")) >= count
            else None
        ),
        timeout=30,
        message=f"{count} delivered notification(s) of {task}",
    )


def test_failed_and_succeeded_are_delivered_with_payload_headers_event_id_and_signature(
    db_conninfo: str, tmp_path: Path, receiver: Receiver
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "hook-key").write_text("s3cret-signing-key\n")
    (secrets / "hook-token").write_text("tok-123456")
    notify = replace(FAST, secrets_dir=secrets)
    signed = {"sign": SecretRef(name="hook-key")}
    headers = {"headers": {"Authorization": SecretRef(name="hook-token"), "X-Team": "data"}}
    with alerting_cluster(db_conninfo, tmp_path, notify) as (coordinator, client):
        client.apply(
            Task(
                name="good",
                command=["true"],
                notify=[_hook(receiver.url, NotifyEvent.SUCCEEDED, **signed, **headers)],
            )
        )
        client.apply(
            Task(
                name="bad",
                command=["sh", "-c", "exit 3"],
                retry=Retry(max_attempts=2, backoff=timedelta(0)),
                notify=[_hook(receiver.url, NotifyEvent.FAILED, **signed)],
            )
        )
        good, _ = client.trigger("good")
        bad, _ = client.trigger("bad")
        requests = receiver.received(2)
        good_rows = _delivered(client, "good")
        bad_rows = _delivered(client, "bad")
        # Counted as delivered by hydra_notifications_total{outcome} (docs/metrics.md).
        metrics = coordinator.coordinator.metrics
        assert metrics.notifications.labels("delivered")._value.get() == 2
    by_task = {r.json()["task"]: r for r in requests}
    assert sorted(by_task) == ["bad", "good"] and len(requests) == 2
    for request in requests:
        digest = hmac.new(b"s3cret-signing-key", request.body, hashlib.sha256).hexdigest()
        assert request.headers["Hydra-Signature"] == f"sha256={digest}"
        assert request.headers["Content-Type"] == "application/json"
    success, failure = by_task["good"].json(), by_task["bad"].json()
    assert success["event"] == "succeeded" and success["run_id"] == good.id
    assert success["state"] == "SUCCEEDED" and success["exit_code"] == 0
    assert failure["event"] == "failed" and failure["run_id"] == bad.id
    assert (failure["state"], failure["exit_code"], failure["attempts"]) == ("FAILED", 3, 2)
    assert by_task["good"].headers["Hydra-Event-Id"] == good_rows[0].event_id == success["event_id"]
    assert by_task["bad"].headers["Hydra-Event-Id"] == bad_rows[0].event_id
    assert by_task["good"].headers["Authorization"] == "tok-123456"
    assert by_task["good"].headers["X-Team"] == "data"
    assert (good_rows[0].attempts, good_rows[0].state) == (1, NotificationState.DELIVERED)
    # No secret value was stored anywhere.
    dump = Database(db_conninfo).value("SELECT string_agg(t::text, '') FROM hydra_notifications t")
    assert "tok-123456" not in dump and "s3cret" not in dump


def test_a_receiver_down_for_a_while_gets_the_event_late_and_once(
    db_conninfo: str, tmp_path: Path
) -> None:
    port = free_port()
    receiver = Receiver(port)
    notify = replace(FAST, max_tries=100)
    try:
        with alerting_cluster(db_conninfo, tmp_path, notify) as (_, client):
            client.apply(
                Task(
                    name="t", command=["true"], notify=[_hook(receiver.url, NotifyEvent.SUCCEEDED)]
                )
            )
            client.trigger("t")
            wait_for(
                lambda: any(n.attempts >= 3 for n in client.list_notifications(task="t")),
                timeout=30,
                message="three failed tries while the receiver is down",
            )
            pending = client.list_notifications(task="t")
            assert [n.state for n in pending] == [NotificationState.PENDING]
            assert "Connection refused" in pending[0].last_error
            receiver.start()
            delivered = _delivered(client, "t")
            time.sleep(1.0)  # a second delivery would come within a poll or two
            assert len(receiver.requests) == 1
            assert delivered[0].attempts >= 4 and delivered[0].last_error == ""
    finally:
        receiver.stop()


def test_a_notification_is_failed_after_its_tries_with_the_last_error(
    db_conninfo: str, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.status = 500
    with alerting_cluster(db_conninfo, tmp_path, replace(FAST, max_tries=3)) as (c, client):
        client.apply(
            Task(name="t", command=["true"], notify=[_hook(receiver.url, NotifyEvent.SUCCEEDED)])
        )
        client.trigger("t")
        failed = wait_for(
            lambda: client.list_notifications(task="t", state="failed"),
            timeout=30,
            message="the notification failed",
        )
        hydractl = Hydractl(c.address)
        listed = hydractl.json("notifications", "list", "--task", "t", "--state", "failed")
        table = hydractl.ok("notifications", "list")
        refused = hydractl.run("notifications", "list", "--state", "lost")
    assert len(receiver.requests) == 3
    assert [(n["event"], n["state"], n["attempts"]) for n in listed] == [("succeeded", "failed", 3)]
    assert listed[0]["url"] == receiver.url and listed[0]["last_error"].startswith("HTTP 500")
    assert "TRIES" in table and "HTTP 500" in table
    assert refused.returncode != 0 and "--state" in refused.stderr
    assert failed[0].attempts == 3 and failed[0].last_error.startswith("HTTP 500")
    assert len({r.headers["Hydra-Event-Id"] for r in receiver.requests}) == 1


SLACK_BODY = (
    '{"text": {{ (":red_circle: *" ~ task ~ "* " ~ event ~ " (exit " ~ exit_code ~ ", "'
    ' ~ attempts ~ "/" ~ max_attempts ~ " attempts)") | tojson }},'
    ' "blocks": [{"type": "section", "text": {"type": "mrkdwn",'
    ' "text": {{ ("Run `" ~ run_id ~ "` for " ~ occurrence) | tojson }}}}]}'
)


def test_a_slack_style_body_template_is_rendered_over_the_run(
    db_conninfo: str, tmp_path: Path, receiver: Receiver
) -> None:
    with alerting_cluster(db_conninfo, tmp_path) as (_, client):
        client.apply(
            Task(
                name="billing.export",
                command=["sh", "-c", "exit 2"],
                notify=[_hook(receiver.url, NotifyEvent.FAILED, body=SLACK_BODY)],
            )
        )
        run, _ = client.trigger("billing.export")
        (request,) = receiver.received(1)
    message = request.json()
    assert message["text"] == ":red_circle: *billing.export* failed (exit 2, 1/1 attempts)"
    assert message["blocks"][0]["text"]["text"].startswith(f"Run `{run.id}` for ")


RUNAWAY_BODY = (
    "{% for i in range(100000) %}{% for j in range(attempts * 100000) %}{% endfor %}{% endfor %}"
)


def test_a_hostile_body_template_is_bounded_its_error_recorded_and_nothing_stalls(
    db_conninfo: str, tmp_path: Path, receiver: Receiver
) -> None:
    with alerting_cluster(db_conninfo, tmp_path) as (_, client):
        client.apply(
            Task(
                name="hostile",
                command=["true"],
                notify=[_hook(receiver.url, NotifyEvent.SUCCEEDED, body=RUNAWAY_BODY)],
            )
        )
        client.apply(
            Task(
                name="plain", command=["true"], notify=[_hook(receiver.url, NotifyEvent.SUCCEEDED)]
            )
        )
        client.trigger("hostile")
        started = time.monotonic()
        runs = [client.trigger("plain")[0] for _ in range(3)]
        for run in runs:
            assert client.wait(run.id, timeout=30).state == "SUCCEEDED"
        assert time.monotonic() - started < 20
        _delivered(client, "plain", 3)
        failed = wait_for(
            lambda: client.list_notifications(task="hostile", state="failed"),
            timeout=30,
            message="the hostile body's notification failed",
        )
    assert "time limit" in failed[0].last_error and "body" in failed[0].last_error
    assert all(r.json()["task"] == "plain" for r in receiver.requests)


def test_a_hanging_receiver_does_not_delay_dispatch(
    db_conninfo: str, tmp_path: Path, receiver: Receiver
) -> None:
    notify = replace(FAST, timeout=timedelta(seconds=60), max_tries=1)

    def latencies(client: Client, count: int) -> list[float]:
        found = []
        for _ in range(count):
            before = time.monotonic()
            run, _ = client.trigger("t")
            client.wait(run.id, timeout=30)
            found.append(time.monotonic() - before)
        return found

    with alerting_cluster(db_conninfo, tmp_path, notify) as (_, client):
        client.apply(Task(name="t", command=["true"]))
        calm = latencies(client, 5)
        receiver.hang.set()
        client.apply(
            Task(name="t", command=["true"], notify=[_hook(receiver.url, NotifyEvent.SUCCEEDED)])
        )
        hung = latencies(client, 8)
        # Every delivery thread now waits on the receiver, the rest are queued.
        assert len(receiver.requests) >= notify.concurrency
        more = latencies(client, 5)
        receiver.released.set()
    assert statistics.median(hung + more) <= max(3 * statistics.median(calm), 1.0)


def test_late_is_sent_once_when_the_deadline_passes_while_a_precondition_holds_the_run(
    db_conninfo: str, tmp_path: Path, receiver: Receiver
) -> None:
    gate = tmp_path / "gate"
    with alerting_cluster(db_conninfo, tmp_path) as (_, client):
        client.apply(
            Task(
                name="gated",
                command=["true"],
                preconditions=[FileCheck(path=str(gate))],
                poke_interval=timedelta(seconds=1),
                deadline=timedelta(seconds=2),
                notify=[_hook(receiver.url, NotifyEvent.LATE, NotifyEvent.SUCCEEDED)],
            )
        )
        run, _ = client.trigger("gated")
        (late,) = receiver.received(1, timeout=30)
        time.sleep(2.0)  # ten rounds of the deadline loop: still only one
        assert len(receiver.requests) == 1
        gate.write_text("")
        assert client.wait(run.id, timeout=30).state == "SUCCEEDED"
        requests = receiver.received(2)
        rows = client.list_notifications(task="gated")
    event = late.json()
    assert (event["event"], event["run_id"], event["deadline"]) == ("late", run.id, "2s")
    assert event["state"] in ("QUEUED", "LEASED")
    assert [r.json()["event"] for r in requests] == ["late", "succeeded"]
    assert sorted(n.event.value for n in rows) == ["late", "succeeded"]


def test_missed_is_sent_once_when_catch_up_drops_occurrences(
    db_conninfo: str, tmp_path: Path, receiver: Receiver
) -> None:
    db = Database(db_conninfo)
    task = Task(
        name="ticker",
        command=["true"],
        triggers=[Interval(every=timedelta(seconds=2))],
        notify=[_hook(receiver.url, NotifyEvent.MISSED)],
    )
    with alerting_cluster(db_conninfo, tmp_path, agents=0) as (_, client):
        client.apply(task)
        wait_for(lambda: len(db.runs("ticker")) >= 1, timeout=20, message="a first run")
    missed_before = len(receiver.requests)
    time.sleep(5)  # every coordinator down: two or three occurrences pass
    with alerting_cluster(db_conninfo, tmp_path, agents=0) as (_, client):
        (request,) = receiver.received(missed_before + 1)[missed_before:]
        time.sleep(2.5)  # the next occurrences fire on time: nothing more is missed
        rows = client.list_notifications(task="ticker")
    event = request.json()
    assert missed_before == 0 and len(receiver.requests) == 1 and len(rows) == 1
    assert event["event"] == "missed" and event["catchup"] == "latest"
    assert event["missed_since"] == event["occurrence"]


@pytest.mark.slow
def test_a_coordinator_sigkilled_mid_delivery_loses_no_event(
    db_conninfo: str, tmp_path: Path, receiver: Receiver
) -> None:
    """A real `hydra coordinator` is SIGKILLed while its POST is in flight: once its
    lease expires another coordinator delivers the event again, with the same id."""
    address = f"127.0.0.1:{free_port()}"
    argv = coordinator_argv(db_conninfo, address, coordinator_id="doomed")
    with Processes(tmp_path / "logs") as processes:
        doomed = processes.start("doomed", [*argv, "--notify-timeout", "3s"])
        wait_serving(doomed, address)
        agent = AgentProcess("agent-0", [address], log_path=tmp_path / "agent.log").start()
        try:
            wait_agents(db_conninfo, ["agent-0"], watched=[agent], timeout=30)
            receiver.hang.set()
            with Client([address]) as client:
                client.apply(
                    Task(
                        name="t",
                        command=["true"],
                        notify=[_hook(receiver.url, NotifyEvent.SUCCEEDED)],
                    )
                )
                run, _ = client.trigger("t")
                (first,) = receiver.received(1)
            doomed.kill()
        finally:
            agent.stop()
        receiver.released.set()
        survivor = CoordinatorThread(db_conninfo, name="survivor", notify=FAST).start()
        try:
            with Client([survivor.address]) as client:
                requests = receiver.received(2, timeout=60)
                (row,) = _delivered(client, "t")
        finally:
            survivor.stop()
    assert first.json()["run_id"] == run.id
    assert {r.headers["Hydra-Event-Id"] for r in requests} == {row.event_id}
    assert len(requests) == 2 and requests[1].body == first.body


def test_cluster_defaults_serve_tasks_without_notify_and_scoped_viewers_see_their_own(
    db_conninfo: str, tmp_path: Path, receiver: Receiver
) -> None:
    defaults = (_hook(receiver.url, NotifyEvent.SUCCEEDED),)
    coordinator = CoordinatorThread(
        db_conninfo, name="secured", insecure=False, notify=replace(FAST, defaults=defaults)
    ).start()
    token = make_credential(db_conninfo, "agent-a", "agent", agent_id="a")
    agent = AgentProcess("a", [coordinator.address], log_path=tmp_path / "a.log", token=token)
    try:
        agent.start()
        wait_agents(db_conninfo, ["a"], watched=[agent], timeout=30)
        admin = Client(coordinator.address, token=make_credential(db_conninfo, "root", "admin"))
        viewer = Client(coordinator.address, token=make_credential(db_conninfo, "v", "viewer"))
        scoped = Client(
            coordinator.address,
            token=make_credential(db_conninfo, "bv", "viewer", scope="billing."),
        )
        own = _hook(receiver.url, NotifyEvent.SUCCEEDED, NotifyEvent.FAILED)
        admin.apply(
            [
                Task(name="billing.export", command=["true"]),
                Task(name="hr.payroll", command=["true"], notify=[own]),
            ]
        )
        for name in ("billing.export", "hr.payroll"):
            admin.wait(admin.trigger(name)[0].id, timeout=30)
        receiver.received(2)
        _delivered(admin, "billing.export")
        _delivered(admin, "hr.payroll")
        everything = {n.task: n for n in viewer.list_notifications()}
        mine = scoped.list_notifications()
        with pytest.raises(HydraError) as refused:
            scoped.list_notifications(task="hr.payroll")
    finally:
        agent.stop()
        coordinator.stop()
    assert sorted(everything) == ["billing.export", "hr.payroll"]
    assert everything["billing.export"].from_defaults
    assert not everything["hr.payroll"].from_defaults
    assert [n.task for n in mine] == ["billing.export"]
    assert refused.value.status_code_name == "PERMISSION_DENIED"


def test_late_is_sent_for_an_occurrence_whose_run_was_never_created(db_conninfo: str) -> None:
    """The trigger of a task is behind by more than the deadline (no coordinator
    fired it): the deadline loop's query finds the occurrence and records it once."""
    db = Database(db_conninfo)
    hook = _hook("http://127.0.0.1:9/hook", NotifyEvent.LATE)
    spec = Task(
        name="nightly",
        command=["true"],
        triggers=[Interval(every=timedelta(hours=1))],
        deadline=timedelta(minutes=10),
        notify=[hook],
    )

    async def scenario() -> list[int]:
        pool = open_pool(db_conninfo, 2)
        await pool.open()
        store = Store(pool)
        try:
            await apply_spec(store, spec, dry_run=False, now=datetime.now(UTC))
            db.rows(
                "UPDATE hydra_triggers SET next_fire_at = now() - interval '1 hour' RETURNING id"
            )
            now = datetime.now(UTC)
            return [await store.run(outbox.record_late, now, 500) for _ in range(3)]
        finally:
            await pool.close()

    assert asyncio.run(scenario()) == [1, 0, 0]
    rows = db.rows("SELECT event, run_id, payload FROM hydra_notifications")
    assert [(r["event"], r["run_id"]) for r in rows] == [("late", None)]
    assert rows[0]["payload"]["state"] == "NOT_CREATED"


def test_retrying_and_skipped_are_recorded_with_their_run(
    db_conninfo: str, tmp_path: Path, receiver: Receiver
) -> None:
    events = (NotifyEvent.RETRYING, NotifyEvent.FAILED, NotifyEvent.SKIPPED)
    with alerting_cluster(db_conninfo, tmp_path) as (_, client):
        client.apply(
            [
                Task(
                    name="up",
                    command=["false"],
                    retry=Retry(max_attempts=2, backoff=timedelta(0)),
                    notify=[_hook(receiver.url, *events)],
                ),
                Task(
                    name="down",
                    command=["true"],
                    triggers=[After(tasks=("up",))],
                    notify=[_hook(receiver.url, *events)],
                ),
            ]
        )
        run, _ = client.trigger("up")
        requests = receiver.received(3)
        time.sleep(1.0)
    got = sorted((r.json()["task"], r.json()["event"], r.json()["attempts"]) for r in requests)
    assert got == [("down", "skipped", 0), ("up", "failed", 2), ("up", "retrying", 1)]
    retrying = next(r.json() for r in requests if r.json()["event"] == "retrying")
    assert retrying["run_id"] == run.id and retrying["next_try_at"] is not None
    assert retrying["exit_code"] == 1
    assert len({r.headers["Hydra-Event-Id"] for r in requests}) == 3
