"""The web UI's sign-in over plain HTTP (httpx) against real processes: an
--insecure coordinator takes an empty credential, coordinators that cannot be
reached are a page that says so, and a cookie is bound to its key."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from harness.net import free_port
from harness.web import start_web

from support.processes import Cluster

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _sign_in(client: httpx.Client, credential: str) -> httpx.Response:
    form = client.get("/login")
    token = _CSRF.findall(form.text)[0]
    return client.post("/login", data={"csrf": token, "credential": credential, "next": "/agents"})


def test_an_open_cluster_takes_an_empty_credential_and_a_cookie_needs_its_key(
    cluster: Cluster, tmp_path: Path
) -> None:
    key = tmp_path / "session.key"
    key.write_bytes(b"k" * 32)
    address = cluster.coordinator.address
    _, url = start_web(cluster.processes, address, "--session-key-file", str(key))
    with httpx.Client(base_url=url, timeout=10) as client:
        login = client.get("/login")
        assert "leave it empty" in login.text
        signed_in = _sign_in(client, "")
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/agents"
        page = client.get("/agents")
        assert page.status_code == 200 and "anonymous" in page.text
        cookie = client.cookies["hydra_session"]

    # Another `hydra web` with the same key takes the session; one with another key does not.
    _, same = start_web(cluster.processes, address, "--session-key-file", str(key), name="same")
    _, other = start_web(cluster.processes, address, name="other")
    for base, status in ((same, 200), (other, 303)):
        with httpx.Client(base_url=base, timeout=10, cookies={"hydra_session": cookie}) as client:
            assert client.get("/agents").status_code == status


def test_unreachable_coordinators_are_a_page_that_says_so(cluster: Cluster) -> None:
    _, url = start_web(cluster.processes, f"127.0.0.1:{free_port()}", name="lost")
    with httpx.Client(base_url=url, timeout=30) as client:
        refused = _sign_in(client, "anything")
        assert refused.status_code == 503
        assert "cannot reach the coordinators" in refused.text
        assert "Traceback" not in refused.text and "anything" not in refused.text
