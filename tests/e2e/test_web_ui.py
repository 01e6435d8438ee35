"""The web UI in a real browser (Debian's Chromium driven by Playwright) against
`hydra dev` as real processes, with authentication on (docs/web.md).

One `hydra dev` and one browser for the module; each test uses its own tasks
and its own browser context (its own cookies). Screenshots of the main pages go
to the module's temporary directory, to be looked at, not committed.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from harness.hydra import HYDRA, Hydractl, wait_agent_state, wait_serving
from harness.net import free_port
from harness.postgres import temporary_home
from harness.wait import wait_for

from support.processes import START_TIMEOUT_S, processes_in

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
EMBEDDED_START_S = 60.0
#: How long the browser waits for something to appear (live updates included).
UI_TIMEOUT_MS = 20_000
expect.set_options(timeout=UI_TIMEOUT_MS)
_DEV_LINK = re.compile(r"hydra web: sign in as the local admin: (\S+)")
_SERVING = re.compile(r"hydra web: serving (\S+)")


@dataclass(frozen=True)
class Dev:
    """The running `hydra dev`: its web URL, its CLI, and the admin's credential."""

    url: str
    hydractl: Hydractl
    admin_secret: str
    log: Path
    shots: Path

    def dev_link(self) -> str:
        found = _DEV_LINK.findall(self.log.read_text())
        assert found, "hydra web printed no sign-in link"
        return str(found[-1])


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    logs = tmp_path_factory.mktemp("web-ui")
    with temporary_home() as home, processes_in(logs, home=home) as processes:
        address, web = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        argv = [*HYDRA, "dev", "--home", str(home), "--listen", address, "--web-listen", web]
        process = processes.start("dev", argv)
        wait_serving(process, address, timeout=EMBEDDED_START_S)
        hydractl = Hydractl(address, env={"HYDRA_HOME": str(home)})
        wait_agent_state(hydractl, f"{socket.gethostname()}-dev", "connected", START_TIMEOUT_S)

        def serving() -> str | None:
            found = _SERVING.search(process.log())
            return found.group(1) if found and _DEV_LINK.search(process.log()) else None

        url = wait_for(serving, timeout=START_TIMEOUT_S, message="hydra web serving")
        secret = (home / "credentials" / "admin.token").read_text().strip()
        shots = logs / "screenshots"
        shots.mkdir()
        yield Dev(url.rstrip("/"), hydractl, secret, process.log_path, shots)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    made = browser.new_context(viewport={"width": 1280, "height": 860})
    made.set_default_timeout(UI_TIMEOUT_MS)
    yield made
    made.close()


def apply(dev: Dev, tmp_path: Path, name: str, text: str) -> None:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(text)
    dev.hydractl.ok("apply", "-f", str(spec))


def sign_in(page: Page, dev: Dev, secret: str) -> None:
    page.goto(f"{dev.url}/login")
    page.get_by_label("Credential").fill(secret)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Tasks", exact=True)).to_be_visible()


def shoot(page: Page, dev: Dev, name: str) -> None:
    page.screenshot(path=str(dev.shots / f"{name}.png"), full_page=True)


def forge_post(page: Page, action: str, csrf: str | None) -> None:
    """Submit a form the page did not offer, as a forger's page would (same session)."""
    page.evaluate(
        """([action, csrf]) => {
            const form = document.createElement("form");
            form.method = "post";
            form.action = action;
            if (csrf !== null) {
                const input = document.createElement("input");
                input.type = "hidden"; input.name = "csrf"; input.value = csrf;
                form.appendChild(input);
            }
            document.body.appendChild(form);
            form.submit();
        }""",
        [action, csrf],
    )


def csrf_of(page: Page) -> str:
    token = page.locator("form[action='/logout'] input[name=csrf]").get_attribute("value")
    assert token
    return token


def test_the_dev_link_signs_the_admin_in_once_and_the_cookie_hides_the_credential(
    dev: Dev, context: BrowserContext, browser: Browser
) -> None:
    link = dev.dev_link()
    assert dev.admin_secret not in dev.log.read_text()  # nor in the link printed
    page = context.new_page()
    page.goto(link)
    expect(page.get_by_role("heading", name="Tasks", exact=True)).to_be_visible()
    expect(page.locator(".whoami")).to_contain_text("admin")
    [cookie] = [c for c in context.cookies() if c["name"] == "hydra_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert dev.admin_secret not in cookie["value"]
    shoot(page, dev, "tasks-empty")

    other = browser.new_context()
    try:
        again = other.new_page()
        again.goto(link)
        expect(again.get_by_role("heading", name="Sign-in link not valid")).to_be_visible()
    finally:
        other.close()


def test_form_sign_in_refuses_a_wrong_credential_and_a_post_without_csrf_token(
    dev: Dev, context: BrowserContext
) -> None:
    page = context.new_page()
    page.goto(f"{dev.url}/agents")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("Credential").fill("not-a-credential")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not accepted")
    shoot(page, dev, "sign-in")
    sign_in(page, dev, dev.admin_secret)
    forge_post(page, "/agents/nobody/drain", csrf=None)
    expect(page.get_by_role("heading", name="Form refused")).to_be_visible()
    forge_post(page, "/agents/nobody/drain", csrf="wrong")
    expect(page.get_by_role("heading", name="Form refused")).to_be_visible()


def test_applied_task_appears_its_triggered_run_turns_green_live_and_its_log_shows(
    dev: Dev, context: BrowserContext, tmp_path: Path
) -> None:
    grid = context.new_page()
    sign_in(grid, dev, dev.admin_secret)
    grid.evaluate("window.notReloaded = true")
    gate = tmp_path / "gate"  # the run holds until the test opens it
    apply(dev, tmp_path, "greet", (
        "name: greet\ndescription: Greets whoever the run names.\n"
        "command: [sh, -c, 'echo hello {{ params.who }}; "
        f"until [ -e {gate} ]; do sleep 0.1; done']\n"
        "params: {who: world}\ntimeout: 60s\n"
        "triggers:\n  - cron: '30 2 * * *'\n    timezone: Australia/Sydney\n"
    ))  # fmt: skip
    row = grid.locator("#task-rows tr", has=grid.get_by_role("link", name="greet", exact=True))
    expect(row).to_be_visible()  # appeared without a reload
    expect(row).to_contain_text("every day at 02:30 Australia/Sydney")

    task = context.new_page()
    task.goto(f"{dev.url}/tasks/greet")
    task.get_by_label("who").fill("from the UI")
    task.get_by_role("button", name="Trigger a run").click()
    expect(task).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
    run_id = task.url.rsplit("/", 1)[1]
    expect(task.locator("#log")).to_contain_text("hello from the UI")  # live, while it runs
    expect(task.locator("#run-state")).to_have_text("running")

    cell = grid.locator(f"a.cell[href='/runs/{run_id}']")
    expect(cell).to_have_attribute("data-state", "running")
    gate.touch()
    expect(cell).to_have_attribute("data-state", "succeeded")
    assert grid.evaluate("window.notReloaded") is True
    shoot(grid, dev, "tasks")

    expect(task.locator("#run-state")).to_have_text("succeeded")  # followed live
    expect(task.locator("#attempts")).to_contain_text("exit 0")
    task.reload()
    expect(task.locator("#log")).to_contain_text("hello from the UI")  # stored
    shoot(task, dev, "run")
    task.goto(f"{dev.url}/tasks/greet")
    expect(task.locator("#runs")).to_contain_text("succeeded")
    shoot(task, dev, "task")


def test_a_failed_run_is_retried_from_its_page(
    dev: Dev, context: BrowserContext, tmp_path: Path
) -> None:
    apply(dev, tmp_path, "flaky", "name: flaky\ncommand: [sh, -c, 'echo boom >&2; exit 3']\n")
    run_id = dev.hydractl.run("run", "flaky", "--wait").stdout.split()[0]
    page = context.new_page()
    sign_in(page, dev, dev.admin_secret)
    page.goto(f"{dev.url}/runs/{run_id}")
    expect(page.locator("#run-state")).to_have_text("failed")
    expect(page.locator("#attempts")).to_contain_text("exit 3")
    expect(page.locator("#log")).to_contain_text("boom")
    page.get_by_role("button", name="Retry").click()
    expect(page.locator("#attempts li")).to_have_count(2)  # the new attempt, live
    expect(page.locator("#run-state")).to_have_text("failed")
    expect(page.locator("#log")).to_contain_text("attempt 2")


def test_a_backfill_is_previewed_then_confirmed(
    dev: Dev, context: BrowserContext, tmp_path: Path
) -> None:
    apply(dev, tmp_path, "nightly", (
        "name: nightly\ncommand: [echo, '{{ ds }}']\n"
        "triggers:\n  - cron: '0 3 * * *'\n"
    ))  # fmt: skip
    page = context.new_page()
    sign_in(page, dev, dev.admin_secret)
    page.goto(f"{dev.url}/tasks/nightly")
    page.get_by_label("Backfill from (UTC)").fill("2026-01-01T00:00:00")
    page.get_by_label("Backfill to (UTC)").fill("2026-01-03T23:00:00")
    page.get_by_role("button", name="Preview occurrences").click()
    expect(page.locator("#backfill-total")).to_have_text("3")
    expect(page.locator("#backfill-occurrences li")).to_have_count(3)
    assert dev.hydractl.json("runs", "list", "--task", "nightly") == []  # a dry run
    shoot(page, dev, "backfill-preview")
    page.get_by_role("button", name="Create 3 runs").click()
    expect(page.get_by_role("status")).to_contain_text("Created 3 runs")
    assert len(dev.hydractl.json("runs", "list", "--task", "nightly")) == 3
    page.goto(f"{dev.url}/tasks/nightly?from=2026-01-02T00:00&to=2026-01-02T23:59")
    expect(page.locator("#runs tbody tr")).to_have_count(1)  # the occurrence range filter
    expect(page.locator("#runs tbody")).to_contain_text("2026-01-02 03:00:00")


def test_versions_show_the_diff_between_two(
    dev: Dev, context: BrowserContext, tmp_path: Path
) -> None:
    apply(dev, tmp_path, "evolving", "name: evolving\ncommand: [echo, one]\n")
    apply(dev, tmp_path, "evolving", "name: evolving\ncommand: [echo, two]\n")
    page = context.new_page()
    sign_in(page, dev, dev.admin_secret)
    page.goto(f"{dev.url}/tasks/evolving")
    page.get_by_role("link", name="Versions").click()
    expect(page.locator(".diff-del")).to_have_text(["-- one"])
    expect(page.locator(".diff-add")).to_have_text(["+- two"])
    shoot(page, dev, "versions")


def test_the_graph_of_the_example_pipeline_shows_where_the_chain_broke(
    dev: Dev, context: BrowserContext, tmp_path: Path
) -> None:
    # The example as it is, but transform gives up on its _READY file after 2 s
    # instead of 6 h (on_timeout: fail): a real failure breaks the chain.
    example = (Path(__file__).parents[2] / "examples" / "pipeline.yaml").read_text()
    assert "precondition_timeout: 6h" in example and "poke_interval: 5s" in example
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        example.replace("precondition_timeout: 6h", "precondition_timeout: 2s").replace(
            "poke_interval: 5s", "poke_interval: 1s"
        )
    )
    dev.hydractl.ok("apply", "-f", str(pipeline))
    occurrence = "2025-03-04T15:00:00Z"  # 02:00 on the 5th in Sydney
    dev.hydractl.ok("run", "ingest", "--occurrence", occurrence, "--wait")

    def publish_state() -> str | None:
        runs = dev.hydractl.json("runs", "list", "--task", "publish")
        return next((run["state"] for run in runs if run["occurrence"] == occurrence), None)

    assert wait_for(publish_state, timeout=60, message="publish's run") == "SKIPPED"
    page = context.new_page()
    sign_in(page, dev, dev.admin_secret)
    page.goto(f"{dev.url}/tasks/publish/graph?occurrence={occurrence}")
    expect(page.locator("#graph-verdict")).to_contain_text("broke at transform (failed")
    expect(page.locator(".node[data-task=ingest]")).to_have_attribute("data-state", "succeeded")
    expect(page.locator(".node[data-task=transform]")).to_have_attribute("data-state", "failed")
    # publish was skipped because of it: a consequence, not where the chain broke
    expect(page.locator(".node[data-task=publish]")).to_have_attribute("data-state", "skipped")
    expect(page.locator("#graph-verdict")).not_to_contain_text("publish")
    shoot(page, dev, "graph")


def test_a_viewer_sees_no_buttons_and_a_forged_post_is_refused_by_the_coordinator(
    dev: Dev, context: BrowserContext, tmp_path: Path
) -> None:
    apply(dev, tmp_path, "watched", "name: watched\ncommand: [sh, -c, 'exit 1']\n")
    failed = dev.hydractl.run("run", "watched", "--wait").stdout.split()[0]
    secret = dev.hydractl.ok("credentials", "create", "--name", "web-viewer", "--role", "viewer")
    page = context.new_page()
    sign_in(page, dev, secret.strip().splitlines()[-1])
    expect(page.locator(".whoami")).to_contain_text("viewer")
    expect(page.get_by_role("link", name="Audit")).to_have_count(0)
    page.goto(f"{dev.url}/tasks/watched")
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    for label in ("Trigger a run", "Pause", "Preview occurrences"):
        expect(page.get_by_role("button", name=label)).to_have_count(0)
    page.goto(f"{dev.url}/runs/{failed}")
    expect(page.locator("#run-state")).to_have_text("failed")
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)
    page.goto(f"{dev.url}/agents")
    expect(page.get_by_role("button", name="Drain")).to_have_count(0)

    forge_post(page, f"/runs/{failed}/retry", csrf=csrf_of(page))
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("PERMISSION_DENIED")
    expect(page.get_by_role("alert")).to_contain_text("needs role operator")
    assert "Traceback" not in page.content()
    shoot(page, dev, "refused")
    assert dev.hydractl.json("runs", "get", failed)["attempts_used"] == 1


def test_screenshots_of_the_other_pages(dev: Dev, browser: Browser) -> None:
    laptop, phone = {"width": 1280, "height": 860}, {"width": 390, "height": 844}
    for name, viewport in (("", laptop), ("phone-", phone)):
        made = browser.new_context(viewport=viewport)
        try:
            page = made.new_page()
            sign_in(page, dev, dev.admin_secret)
            for path in ("tasks", "agents", "cluster", "notifications", "audit", "tasks/greet"):
                page.goto(f"{dev.url}/{path}")
                expect(page.locator("main h1")).to_be_visible()
                shoot(page, dev, name + path.replace("/", "-"))
        finally:
            made.close()
