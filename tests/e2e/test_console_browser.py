"""The web console in a real browser (Debian's chromium, driven by Playwright) against a
live facade, the operator and the control plane: a newcomer registers, makes an
organization and a workspace, creates an agent through the form and sees it Ready at
revision 1, gets an API key shown once; a viewer finds the write actions disabled and
the facade refuses the same call made by hand."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.support.facade import PASSWORD
from tests.support.live_server import Server, live_facade
from tests.support.processes import start_operator

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "console" / "dist"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# KAIZEN_UPDATE_SCREENSHOT=1 refreshes the picture the README shows.
SCREENSHOT = ROOT / "docs" / "images" / "console-agent.png"

playwright = pytest.importorskip("playwright.sync_api", reason="pip install -e .[test]")
expect = playwright.expect


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, Any]:
    """Debian's chromium (hack/bootstrap.sh installs it): Playwright downloads nothing."""
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine: run `make bootstrap` (apt-get install chromium)")
    # --no-sandbox: the tests run as root in CI, where chromium's sandbox cannot start;
    # a small /dev/shm (containers) would crash tabs: use /tmp instead.
    args = ["--no-sandbox", "--disable-dev-shm-usage"]
    return {"executable_path": CHROMIUM, "args": args, "headless": True}


@pytest.fixture
def console(
    facade_cluster: Path, api_client: client.ApiClient, tmp_path: Path
) -> Iterator[tuple[Server, str]]:
    """A live facade serving the built console, and the operator watching the
    namespaces of the organization the test will create (its slug)."""
    assert (DIST / "index.html").is_file(), (
        "console/dist is missing: `make bootstrap` builds it (npm ci && npm run build)"
    )
    org = f"c{uuid.uuid4().hex[:8]}"
    operator, _ = start_operator(facade_cluster, f"kz-{org}--*", tmp_path / "operator.log")
    try:
        with live_facade(
            facade_cluster, api_client, tmp_path, env={"KAIZEN_CONSOLE_DIR": str(DIST)}
        ) as server:
            yield server, org
    finally:
        operator.stop()


def register(page: Any, url: str, email: str) -> None:
    page.goto(url + "/")
    expect(page).to_have_url(url + "/login?next=%2F")
    page.get_by_role("link", name="Register").click()
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("heading", name="New organization")).to_be_visible(timeout=30_000)


def test_newcomer_builds_an_agent_and_a_viewer_cannot_write(
    console: tuple[Server, str], browser: Any, tmp_path: Path
) -> None:
    server, org = console
    url = server.url
    owner_email = f"owner-{uuid.uuid4().hex[:6]}@example.com"
    viewer_email = f"viewer-{uuid.uuid4().hex[:6]}@example.com"

    owner_ctx = browser.new_context()
    page = owner_ctx.new_page()
    register(page, url, owner_email)

    # Organization, then workspace: each form lands on what it made.
    page.get_by_label("Slug").fill(org)
    page.get_by_label("Display name").fill("Console test")
    page.get_by_role("button", name="Create organization").click()
    expect(page.get_by_role("heading", name=f"Workspaces of {org}")).to_be_visible()
    page.get_by_label("Workspace name").fill("ml")
    page.get_by_role("button", name="Create workspace").click()
    expect(page).to_have_url(f"{url}/o/{org}/w/ml", timeout=60_000)
    expect(page.get_by_text("No agent yet.")).to_be_visible()

    # An invalid agent: the facade's validation message is shown at the form, in words.
    page.get_by_role("link", name="New agent").click()
    page.get_by_label("Name", exact=True).fill("hello")
    page.get_by_label("Provider").select_option("openai")
    page.get_by_label("Model").fill("gpt-4o-mini")
    page.get_by_role("button", name="Create agent").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("The Agent is not valid")
    expect(alert).to_contain_text("credentialsSecretRef")

    # Fixed: the mock provider needs no credentials. The detail page follows the
    # operator's work by polling until the agent is Ready at revision 1.
    page.get_by_label("Provider").select_option("mock")
    page.get_by_label("Model").fill("echo")
    page.get_by_role("button", name="Create agent").click()
    expect(page.get_by_role("heading", name="Agent hello")).to_be_visible()
    expect(page.get_by_test_id("latest-revision")).to_have_text("1", timeout=90_000)
    expect(page.locator(".badge.ready")).to_have_text("Ready", timeout=90_000)
    expect(page.get_by_label("Agent YAML")).to_contain_text("systemPrompt: You are a helpful")
    expect(page.get_by_role("table", name="Revisions")).to_contain_text("1")

    page.get_by_role("link", name="Agents").click()
    row = page.locator("tr[data-agent=hello]")
    expect(row).to_contain_text("Ready")
    expect(row.locator(".revision")).to_have_text("1")
    page.screenshot(path=str(tmp_path / "agents.png"), full_page=True)
    if os.environ.get("KAIZEN_UPDATE_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))

    # The owner reads the audit log, filtered to their own failed writes (the invalid
    # agent above was refused 422).
    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Outcome").fill("422")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("cell", name=owner_email)).to_have_count(1)
    expect(page.get_by_role("cell", name="422")).to_have_count(1)

    # An API key: its secret is shown once, then only its prefix.
    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Key name").fill("ci")
    page.get_by_role("button", name="Create key").click()
    shown = page.get_by_test_id("new-key")
    expect(shown).to_contain_text("ksk_")
    secret = shown.locator("code").inner_text()
    page.get_by_role("button", name="I have saved it").click()
    page.reload()
    expect(page.get_by_role("cell", name="ci", exact=True)).to_be_visible()
    assert secret not in page.content()

    # A second person registers; the owner makes them a viewer of the workspace.
    viewer_ctx = browser.new_context()
    vpage = viewer_ctx.new_page()
    register(vpage, url, viewer_email)
    page.get_by_role("link", name="Members & teams").click()
    page.get_by_label("Member email").fill(viewer_email)
    page.get_by_label("Role", exact=True).select_option("viewer")
    page.get_by_role("button", name="Add existing user").click()
    expect(page.get_by_role("cell", name=viewer_email)).to_be_visible()
    page.goto(f"{url}/o/{org}/w/ml/members")
    page.get_by_label("Subject").fill(f"user:{viewer_email}")
    page.get_by_label("Workspace role").select_option("viewer")
    page.get_by_role("button", name="Save role").click()
    expect(page.get_by_role("table", name="Workspace members")).to_contain_text(viewer_email)

    # The viewer sees the agent but every write action is disabled...
    vpage.goto(f"{url}/o/{org}/w/ml")
    expect(vpage.locator("tr[data-agent=hello]")).to_contain_text("Ready")
    expect(vpage.get_by_role("button", name="New agent")).to_be_disabled()
    vpage.get_by_role("link", name="hello").click()
    expect(vpage.get_by_role("button", name="Edit")).to_be_disabled()
    expect(vpage.get_by_role("button", name="Delete")).to_be_disabled()
    expect(vpage.get_by_text("Your role here is viewer")).to_be_visible()
    expect(vpage.get_by_role("link", name="Audit log")).to_have_count(0)  # org viewer
    # ... and the facade refuses the same write sent by hand with the viewer's login.
    status = vpage.evaluate(
        """async (path) => {
            const session = JSON.parse(sessionStorage.getItem("kaizen.session"));
            const r = await fetch(path, {
              method: "POST",
              headers: {"content-type": "application/json",
                        "authorization": "Bearer " + session.access},
              body: JSON.stringify({metadata: {name: "forced"},
                                    spec: {model: {provider: "mock", name: "echo"},
                                           systemPrompt: "x"}}),
            });
            return r.status;
        }""",
        f"/api/v1/orgs/{org}/workspaces/ml/agents",
    )
    assert status == 403
    viewer_ctx.close()
    owner_ctx.close()


def login(page: Any, url: str, email: str) -> None:
    page.goto(url + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible(timeout=30_000)


@pytest.fixture
def promoting(
    facade_cluster: Path, api_client: client.ApiClient, tmp_path: Path
) -> Iterator[tuple[Server, str]]:
    """A live facade serving the console whose owner's workspace ``ml`` holds agent
    ``hello`` (revision 1) and Gateways ``dev`` and ``staging``, with the operator (and
    its Promotion webhook) on that workspace, a ScalingPolicy for staging; and a second
    user, a developer there."""
    import httpx

    assert (DIST / "index.html").is_file(), "console/dist is missing: `make bootstrap`"
    with live_facade(
        facade_cluster, api_client, tmp_path, env={"KAIZEN_CONSOLE_DIR": str(DIST)}
    ) as server:
        operator, _ = start_operator(
            facade_cluster,
            f"kz-{server.org}--*",
            tmp_path / "operator.log",
            f"kaizen.studio/org={server.org}",
        )
        try:
            approver = f"approver-{uuid.uuid4().hex[:6]}@example.com"
            with httpx.Client(base_url=server.api, headers=server.headers, timeout=60) as http:
                ws = f"/orgs/{server.org}/workspaces/ml"
                http.post(
                    "/auth/register", json={"email": approver, "password": PASSWORD}
                ).raise_for_status()
                http.post(
                    f"/orgs/{server.org}/members", json={"email": approver, "role": "developer"}
                ).raise_for_status()
                http.put(
                    f"{ws}/members", json={"subject": f"user:{approver}", "role": "developer"}
                ).raise_for_status()
                http.post(f"{ws}/agents", json=agent_body("hello")).raise_for_status()
                for env in ("dev", "staging"):
                    gw = {
                        "metadata": {"name": env},
                        "spec": {"environment": env, "agents": {"names": ["hello"]}},
                    }
                    http.post(f"{ws}/gateways", json=gw).raise_for_status()
                policy = {
                    "metadata": {"name": "staging"},
                    "spec": {
                        "targetRef": {"kind": "Gateway", "name": "staging"},
                        "minReplicas": 1,
                        "maxReplicas": 3,
                        "metrics": [{"type": "cpu", "averageUtilization": 70}],
                    },
                }
                http.post(f"{ws}/scalingpolicies", json=policy).raise_for_status()
            yield server, approver
        finally:
            operator.stop()


def agent_body(name: str) -> dict[str, Any]:
    from tests.support.facade import agent

    return agent(name)


def test_promotion_created_in_the_console_is_approved_by_a_second_user_and_served(
    promoting: tuple[Server, str], browser: Any
) -> None:
    server, approver = promoting
    url, org = server.url, server.org
    owner_ctx = browser.new_context()
    page = owner_ctx.new_page()
    login(page, url, server.email)
    page.goto(f"{url}/o/{org}/w/ml")
    expect(page.locator("tr[data-agent=hello] .revision")).to_have_text("1", timeout=90_000)

    page.get_by_role("link", name="Promotions").click()
    page.get_by_label("Promotion name").fill("hello-to-staging")
    page.get_by_label("Agent").select_option("hello")
    page.get_by_label("Revision").fill("1")
    page.get_by_label("From gateway").fill("dev")
    page.get_by_label("To gateway").fill("staging")
    page.get_by_label("Require an approval").check()
    page.get_by_label("Approvers").fill(f"kaizen:{approver}")
    page.get_by_role("button", name="Create promotion").click()
    promotions = page.get_by_role("table", name="Promotions")
    row = promotions.locator("tr", has_text="hello-to-staging")
    # Live: the phase moves on screen as the operator works (polling).
    expect(row).to_contain_text("WaitingForApproval", timeout=90_000)

    # The owner is not an approver: the webhook's refusal is shown at the row, in words.
    row.get_by_label("Reason for hello-to-staging").fill("mine")
    row.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("alert")).to_be_visible()
    expect(row).to_contain_text("WaitingForApproval")

    approver_ctx = browser.new_context()
    apage = approver_ctx.new_page()
    login(apage, url, approver)
    apage.goto(f"{url}/o/{org}/w/ml/promotions")
    arow = apage.get_by_role("table", name="Promotions").locator("tr", has_text="hello-to-staging")
    arow.get_by_label("Reason for hello-to-staging").fill("looks good")
    arow.get_by_role("button", name="Approve").click()
    expect(arow).to_contain_text("Succeeded", timeout=90_000)
    expect(arow).to_contain_text(f"kaizen:{approver}: Approved — looks good")

    # The staging gateway now serves revision 1 (side by side with dev).
    apage.get_by_role("link", name="Gateways").click()
    staging = apage.get_by_role("article", name="Gateway staging")
    expect(staging).to_contain_text("hello r1", timeout=60_000)

    # Scaling: the approver (a developer) pins staging with a reason, then clears it.
    policy = apage.get_by_role("article", name="Scaling policy staging")
    expect(policy).to_contain_text("No override.")
    policy.get_by_label("Replicas for staging").fill("2")
    policy.get_by_label("Reason for staging").fill("launch day")
    policy.get_by_role("button", name="Set override").click()
    expect(policy).to_contain_text("Override: Pin at 2 — launch day")
    policy.get_by_role("button", name="Clear").click()
    expect(policy).to_contain_text("No override.")
    approver_ctx.close()
    owner_ctx.close()
