"""The HTTP JSON API of `hydra web` (docs/http-api.md), with httpx against real
processes: a `hydra web` talking to a coordinator with authentication on, on a
real PostgreSQL, and a real agent running what the API triggers.

The tests share one cluster and one web process (module scope); each uses task
names of its own, so they do not interfere.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from harness.hydra import start_agent, start_coordinator
from harness.net import free_port
from harness.processes import Process
from harness.wait import wait_for
from harness.web import start_web
from hydra.limits import MAX_MESSAGE_BYTES

from support.credentials import make_credential
from support.db import Databases
from support.processes import FAST_TIMING, START_TIMEOUT_S, Cluster, processes_in

TIMEOUT = httpx.Timeout(30.0)
UNKNOWN_RUN = "00000000-0000-4000-8000-000000000000"
ACTIVE = ("RUN_STATE_QUEUED", "RUN_STATE_LEASED", "RUN_STATE_RUNNING")


@dataclass(frozen=True)
class Api:
    """A `hydra web` in front of a secured coordinator, and credentials of each role."""

    base: str  # http://127.0.0.1:PORT/api/v1
    tokens: dict[str, str]
    metrics_url: str
    #: Starts one more agent (with a credential of its own) under this id.
    start_agent: Callable[[str], Process]

    def client(self, role: str | None = "admin") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=TIMEOUT)

    def calls_ended(self, method: str) -> int:
        """Calls of RunService/``method`` the coordinator has finished (any status code)."""
        text = httpx.get(
            self.metrics_url, headers={"Authorization": f"Bearer {self.tokens['viewer']}"}
        ).text
        series = rf'^hydra_grpc_requests_total\{{[^}}]*method="hydra\.v1\.RunService/{method}"'
        found = re.findall(series + r"[^}]*\} (\S+)$", text, re.MULTILINE)
        return sum(int(float(value)) for value in found)


@pytest.fixture(scope="module")
def api(
    databases: Databases, db_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    name = databases.create(template=db_template)
    conninfo = databases.conninfo(name)
    tokens = {
        role: make_credential(conninfo, f"web-{role}", role)
        for role in ("admin", "operator", "viewer")
    }
    try:
        with processes_in(tmp_path_factory.mktemp("web-api")) as processes:
            metrics = f"127.0.0.1:{free_port()}"
            coordinator = start_coordinator(
                processes,
                conninfo,
                timing=FAST_TIMING,
                log_level="debug",
                timeout=START_TIMEOUT_S,
                insecure=False,
                extra_args=["--metrics-listen", metrics],
            )

            def agent(agent_id: str) -> Process:
                token_file = processes.log_dir / f"{agent_id}.token"
                token_file.write_text(
                    make_credential(conninfo, agent_id, "agent", agent_id=agent_id)
                )
                token_file.chmod(0o600)
                extra_args = ["--token-file", str(token_file)]
                return start_agent(
                    processes, coordinator, agent_id, capacity=2, extra_args=extra_args
                )

            agent("agent-1")
            _web, url = start_web(processes, coordinator.address)
            api = Api(f"{url}api/v1", tokens, f"http://{metrics}/metrics", agent)
            with api.client() as client:
                wait_for(
                    lambda: _agent_state(client, "agent-1") == "connected",
                    timeout=START_TIMEOUT_S,
                    message="agent-1 connected",
                )
            yield api
    finally:
        databases.drop(name)


def _agent_state(client: httpx.Client, agent_id: str) -> str | None:
    agents = client.get("/agents:list").json()["agents"]
    return next((agent["state"] for agent in agents if agent["id"] == agent_id), None)


def _apply(client: httpx.Client, spec: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/tasks:apply", json={"spec": spec})
    assert response.status_code == 200, response.text
    return response.json()


def _wait_run(client: httpx.Client, run_id: str, *states: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        run: dict[str, Any] = client.get("/runs:get", params={"id": run_id}).json()["run"]
        return run if run["state"] in states else None

    return wait_for(reached, timeout=30, interval=0.2, message=f"run {run_id} {states}")


def _sse_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(event, data) of each server-sent event, as they arrive."""
    event, data = "message", []
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))
        elif not line and data:
            yield event, json.loads("\n".join(data))
            event, data = "message", []


def test_apply_trigger_get_list_watch_and_tail_a_run(api: Api) -> None:
    with api.client() as client:
        applied = _apply(
            client,
            {
                "name": "greet",
                "command": ["echo", "hi {{ params.who }}"],
                "params": {"who": "nobody"},
            },
        )
        assert applied["changed"] is True and applied["task"]["spec"]["name"] == "greet"
        assert applied["previous_version"] == 0  # defaults are printed: predictable shape
        triggered = client.post("/runs:trigger", json={"task": "greet", "params": {"who": "web"}})
        assert triggered.status_code == 200, triggered.text
        run = triggered.json()["run"]
        assert triggered.json()["created"] is True and run["params"]["who"] == "web"

        with client.stream("GET", "/runs:watch", params={"run_id": run["id"]}) as watch:
            assert watch.status_code == 200
            assert watch.headers["content-type"].startswith("text/event-stream")
            states = []
            for event, data in _sse_events(watch):
                assert event == "message"
                states.append(data["run"]["state"])
                if states[-1] == "RUN_STATE_SUCCEEDED":
                    break
        assert states[-1] == "RUN_STATE_SUCCEEDED"

        got = client.get("/runs:get", params={"id": run["id"]})
        assert got.status_code == 200 and got.json()["run"]["state"] == "RUN_STATE_SUCCEEDED"
        listed = client.get(
            "/runs:list", params={"task": "greet", "states": "RUN_STATE_SUCCEEDED"}
        ).json()
        assert [r["id"] for r in listed["runs"]] == [run["id"]]
        assert (
            client.post("/runs:list", json={"task": "greet"}).json()["runs"][0]["id"] == run["id"]
        )

        tail = client.get(
            "/runs:tailLogs",
            params={"run_id": run["id"]},
            headers={"Accept": "application/x-ndjson"},
        )
        assert tail.status_code == 200, tail.text
        assert tail.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in tail.text.splitlines()]
        output = b"".join(base64.b64decode(line["result"]["data"]) for line in lines)
        assert output == b"hi web\n"
        with client.stream("GET", "/runs:tailLogs", params={"run_id": run["id"]}) as sse:
            events = list(_sse_events(sse))
        assert [event for event, _ in events] == ["message", "end"]
        assert base64.b64decode(events[0][1]["data"]) == b"hi web\n"


def test_pause_resume_cancel_retry_and_backfill_dry_run(api: Api) -> None:
    with api.client() as client:
        _apply(
            client,
            {
                "name": "sleepy",
                "command": ["sleep", "30"],
                "triggers": [{"cron": {"expression": "0 * * * *"}}],
            },
        )
        paused = client.post("/tasks:pause", json={"name": "sleepy"})
        assert paused.status_code == 200 and paused.json()["task"]["paused"] is True
        resumed = client.post("/tasks:resume", json={"name": "sleepy"})
        assert resumed.status_code == 200 and resumed.json()["task"]["paused"] is False

        run = client.post("/runs:trigger", json={"task": "sleepy"}).json()["run"]
        _wait_run(client, run["id"], "RUN_STATE_RUNNING")
        cancelled = client.post("/runs:cancel", json={"id": run["id"], "reason": "by the test"})
        assert cancelled.status_code == 200, cancelled.text
        _wait_run(client, run["id"], "RUN_STATE_CANCELLED")
        again = client.post("/runs:cancel", json={"id": run["id"]})
        assert again.status_code == 409, again.text  # FAILED_PRECONDITION: already finished
        assert again.json()["error"]["code"] == "FAILED_PRECONDITION"

        retried = client.post("/runs:retry", json={"id": run["id"]})
        assert retried.status_code == 200, retried.text
        assert retried.json()["run"]["state"] in ACTIVE  # queued again, maybe leased already
        assert client.post("/runs:cancel", json={"id": run["id"]}).status_code == 200
        _wait_run(client, run["id"], "RUN_STATE_CANCELLED")

        backfill = client.post(
            "/runs:backfill",
            json={
                "task": "sleepy",
                "from": "2026-01-01T00:00:00Z",
                "to": "2026-01-01T02:59:00Z",
                "dry_run": True,
            },
        )
        assert backfill.status_code == 200, backfill.text
        assert backfill.json()["occurrences"] == [
            "2026-01-01T00:00:00Z",
            "2026-01-01T01:00:00Z",
            "2026-01-01T02:00:00Z",
        ]
        assert backfill.json()["created"] == []


def test_cluster_status_and_agents_list_and_drain(api: Api) -> None:
    with api.client() as client:
        status = client.get("/cluster:status")
        assert status.status_code == 200, status.text
        assert len(status.json()["coordinators"]) == 1
        second = api.start_agent("agent-2")
        wait_for(lambda: _agent_state(client, "agent-2") == "connected", message="agent-2")
        agents = client.get("/agents:list").json()["agents"]
        assert {agent["id"] for agent in agents} == {"agent-1", "agent-2"}
        with api.client("operator") as operator:
            drained = operator.post("/agents:drain", json={"agent_id": "agent-2"})
        assert drained.status_code == 200, drained.text
        assert drained.json()["agent"]["id"] == "agent-2"
        assert second.wait(timeout=30) == 0  # an idle agent told to drain exits at once
        unknown = client.post("/agents:drain", json={"agent_id": "no-such-agent"})
        assert unknown.status_code == 404, unknown.text
        assert _agent_state(client, "agent-1") == "connected"


def test_a_bad_spec_and_an_unknown_json_field_are_400_naming_the_field(api: Api) -> None:
    with api.client() as client:
        bad_cron = client.post(
            "/tasks:apply",
            json={
                "spec": {
                    "name": "badcron",
                    "command": ["true"],
                    "triggers": [{"cron": {"expression": "not a cron"}}],
                }
            },
        )
        assert bad_cron.status_code == 400, bad_cron.text
        error = bad_cron.json()["error"]
        assert error["code"] == "INVALID_ARGUMENT" and error["field"] == "spec.triggers[0].cron"
        assert error["problems"][0]["field"] == "spec.triggers[0].cron"
        assert error["message"].startswith("spec.triggers[0].cron: ")
        assert "Traceback" not in bad_cron.text

        unknown = client.post(
            "/tasks:apply",
            json={
                "spec": {
                    "name": "typo",
                    "command": ["true"],
                    "triggers": [{"cron": {"expresion": "* * * * *"}}],
                }
            },
        )
        assert unknown.status_code == 400, unknown.text
        assert unknown.json()["error"]["field"] == "spec.triggers[0].cron.expresion"
        assert "expression" in unknown.json()["error"]["message"]  # the fields it has

        wrong_type = client.post("/runs:list", json={"page_size": "many"})
        assert wrong_type.status_code == 400
        assert wrong_type.json()["error"]["field"] == "page_size"
        bad_query = client.get("/runs:list", params={"state": "RUN_STATE_FAILED"})
        assert bad_query.status_code == 400 and bad_query.json()["error"]["field"] == "state"
        bad_enum = client.get("/runs:list", params={"states": "DONE"})
        assert bad_enum.status_code == 400, bad_enum.text
        assert "RUN_STATE_SUCCEEDED" in bad_enum.json()["error"]["message"]
        not_json = client.post(
            "/runs:trigger", content=b"{task: tick}", headers={"Content-Type": "application/json"}
        )
        assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]["message"]


def test_coordinator_statuses_become_http_statuses(api: Api) -> None:
    with api.client() as client:
        unknown_task = client.post("/runs:trigger", json={"task": "no-such-task"})
        assert unknown_task.status_code == 404, unknown_task.text
        assert unknown_task.json()["error"]["code"] == "NOT_FOUND"
        assert client.get("/runs:get", params={"id": UNKNOWN_RUN}).status_code == 404
        watch_unknown = client.get("/runs:tailLogs", params={"run_id": UNKNOWN_RUN})
        assert watch_unknown.status_code == 404, watch_unknown.text  # a refused stream too
    with api.client(None) as anonymous:
        refused = anonymous.post("/runs:trigger", json={"task": "greet"})
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json()["error"]["code"] == "UNAUTHENTICATED"
        assert anonymous.get("/runs:watch").status_code == 401
        forged = anonymous.get(
            "/tasks:list", headers={"Authorization": "Bearer hydra_not-a-real-one"}
        )
        assert forged.status_code == 401
        basic = anonymous.get("/tasks:list", headers={"Authorization": "Basic dXNlcjpwdw=="})
        assert basic.status_code == 401 and "Bearer" in basic.json()["error"]["message"]
    with api.client("viewer") as viewer:
        assert viewer.get("/tasks:list").status_code == 200
        denied = viewer.post("/runs:trigger", json={"task": "greet"})
        assert denied.status_code == 403, denied.text
        assert denied.json()["error"]["code"] == "PERMISSION_DENIED"
        assert "operator" in denied.json()["error"]["message"]
    with api.client("operator") as operator:
        assert (
            operator.post(
                "/tasks:apply", json={"spec": {"name": "x", "command": ["true"]}}
            ).status_code
            == 403
        )


def test_wrong_method_content_type_and_size_are_clear_4xx(api: Api) -> None:
    with api.client() as client:
        get_trigger = client.get("/runs:trigger", params={"task": "greet"})
        assert get_trigger.status_code == 405 and get_trigger.headers["allow"] == "POST"
        assert get_trigger.json()["error"]["message"].startswith("GET is not allowed")
        assert client.delete("/tasks:get").status_code == 405
        xml = client.post(
            "/runs:trigger", content=b"<task/>", headers={"Content-Type": "application/xml"}
        )
        assert xml.status_code == 415 and "application/json" in xml.json()["error"]["message"]
        mixed = client.post("/runs:list", params={"task": "greet"}, json={})
        assert mixed.status_code == 400 and mixed.json()["error"]["field"] == "task"
        nowhere = client.get("/runs:explode")
        assert nowhere.status_code == 404 and nowhere.json()["error"]["code"] == "NOT_FOUND"
        big = client.post(
            "/tasks:apply",
            content=b" " * (MAX_MESSAGE_BYTES + 1),
            headers={"Content-Type": "application/json"},
        )
        assert big.status_code == 413, big.text
    # A declared length over the limit is refused before the body is read.
    host, port = urlsplit(api.base).hostname, urlsplit(api.base).port
    with socket.create_connection((host, port), timeout=30) as raw:
        raw.sendall(
            b"POST /api/v1/runs:trigger HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {MAX_MESSAGE_BYTES + 1}\r\n\r\n".encode()
            + b"{"
        )
        assert raw.recv(65536).startswith(b"HTTP/1.1 413 ")


def test_the_readme_curl_example_triggers_a_run(api: Api) -> None:
    curl = shutil.which("curl")
    assert curl is not None, "curl is needed to check the README's example"
    with api.client() as client:
        _apply(client, {"name": "tick", "command": ["echo", "tick"]})
    done = subprocess.run(
        [
            curl,
            "-sS",
            "-H",
            f"Authorization: Bearer {api.tokens['operator']}",
            "-d",
            '{"task":"tick"}',
            f"{api.base}/runs:trigger",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    run = json.loads(done.stdout)["run"]
    assert run["task"] == "tick" and run["cause"] == "manual"
    with api.client() as client:
        _wait_run(client, run["id"], "RUN_STATE_SUCCEEDED")


def test_a_watcher_that_goes_away_leaves_no_call_open(api: Api) -> None:
    ended = api.calls_ended("Watch")
    with (
        api.client("viewer") as client,
        client.stream("GET", "/runs:watch", headers={"Accept": "application/x-ndjson"}) as watch,
    ):
        assert watch.status_code == 200
        # Open on the coordinator: a Watch is counted only when it ends.
        assert api.calls_ended("Watch") == ended
    # The client closed the connection without reading an event.
    wait_for(lambda: api.calls_ended("Watch") == ended + 1, timeout=10, message="Watch ended")


def test_a_tail_given_up_before_its_first_chunk_leaves_no_call_open(api: Api) -> None:
    with api.client() as client:
        _apply(client, {"name": "nowhere", "command": ["true"], "selector": {"pool": "none"}})
        run = client.post("/runs:trigger", json={"task": "nowhere"}).json()["run"]
        ended = api.calls_ended("TailLogs")
        # No output will come (no agent matches): the answer waits for the first chunk.
        with pytest.raises(httpx.ReadTimeout):
            client.get(
                "/runs:tailLogs",
                params={"run_id": run["id"], "follow": "true"},
                timeout=httpx.Timeout(30.0, read=1.0),
            )
        wait_for(
            lambda: api.calls_ended("TailLogs") == ended + 1, timeout=10, message="TailLogs ended"
        )
        assert client.post("/runs:cancel", json={"id": run["id"]}).status_code == 200


def test_openapi_document_is_served(api: Api) -> None:
    with api.client(None) as anonymous:
        served = anonymous.get("/openapi.json")
    assert served.status_code == 200
    document = served.json()
    assert document["openapi"].startswith("3.") and "/runs:trigger" in document["paths"]


def test_no_coordinator_reachable_is_503(tmp_path: Path) -> None:
    with processes_in(tmp_path) as processes:
        _web, url = start_web(processes, f"127.0.0.1:{free_port()}")  # nothing listens there
        response = httpx.get(f"{url}api/v1/cluster:status", timeout=TIMEOUT)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "UNAVAILABLE"
    assert "Traceback" not in response.text


def test_without_a_header_the_call_goes_without_a_credential(cluster: Cluster) -> None:
    # An --insecure coordinator takes a call without a credential.
    _web, url = start_web(cluster.processes, cluster.coordinator.address)
    response = httpx.get(f"{url}api/v1/tasks:list", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.json() == {"tasks": [], "next_page_token": ""}
