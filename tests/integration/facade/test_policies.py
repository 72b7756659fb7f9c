"""Access policies (Cedar) against a live `kaizen-api` process on PostgreSQL and the
real apiserver: a table of requests x policies (forbid beating a role, permits,
working hours, source address ranges behind a trusted proxy, labels, API-key scopes,
teams, email domains) where every denial names its policy; invalid policies refused
with Cedar's message; the dry run; organizations never see or feel each other's
policies; the permit-required mode; policy changes in the audit trail."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from localdb import postgres
from tests.support.facade import PASSWORD, agent
from tests.support.kube import eventually
from tests.support.live_server import Server, live_facade, start_facade

WEDNESDAY_NOON = "2026-12-02T12:00:00Z"
WEDNESDAY_EVENING = "2026-12-02T20:00:00Z"
SATURDAY_NOON = "2026-12-05T12:00:00Z"
OFFICE_IP = "10.20.30.40"
HOME_IP = "192.0.2.7"

POLICIES = {
    "no-critical-deletes": """
        forbid (principal, action == Kaizen::Action::"delete", resource)
        when { resource.hasTag("tier") && resource.getTag("tier") == "critical" };""",
    "prod-promotions-working-hours": """
        forbid (principal, action == Kaizen::Action::"create", resource)
        when { resource.kind == "promotions" && resource.targetEnvironment == "production"
               && principal.role == "developer" }
        unless { context.dayOfWeek <= 5 && context.hour >= 9 && context.hour < 17 };""",
    "contractor-keys-sandbox-only": """
        forbid (principal in Kaizen::Team::"contractors", action, resource)
        when { principal.isApiKey && resource.workspace != "sandbox" };""",
    "gateway-changes-from-office": """
        forbid (principal, action in Kaizen::Action::"write", resource)
        when { resource.kind == "gateways" }
        unless { context.sourceIp.isInRange(ip("10.0.0.0/8")) };""",
    "no-wildcard-keys": """
        forbid (principal, action, resource) when { principal.keyScopes.contains("*:*") };""",
    "partners-do-not-edit-ml-agents": """
        forbid (principal, action == Kaizen::Action::"update", resource)
        when { principal.emailDomain == "partner.test" && resource.kind == "agents"
               && resource.workspace == "ml" };""",
}


@dataclass
class World:
    server: Server
    api: str
    org: str
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # who -> auth header

    def call(
        self,
        who: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        time: str = WEDNESDAY_NOON,
        ip: str = OFFICE_IP,
        org: str | None = None,
    ) -> httpx.Response:
        headers = {
            **self.headers[who],
            "x-kaizen-test-time": time,
            "x-forwarded-for": ip,  # honoured: the test client is the trusted proxy
        }
        url = f"{self.api}/orgs/{org or self.org}{path}"
        return httpx.request(method, url, json=body, headers=headers, timeout=60)


def login(api: str, email: str) -> dict[str, str]:
    with httpx.Client(base_url=api, timeout=60) as http:
        http.post("/auth/register", json={"email": email, "password": PASSWORD}).raise_for_status()
        token = http.post("/auth/login", json={"email": email, "password": PASSWORD}).json()
    return {"authorization": f"Bearer {token['access_token']}"}


def ok(response: httpx.Response, status: int = 201) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def gateway(name: str, environment: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"environment": environment, "agents": {"names": ["plain"]}},
    }


def promotion(to: str) -> dict[str, Any]:
    return {
        "metadata": {"name": f"p-{uuid.uuid4().hex[:8]}"},
        "spec": {"agentRef": {"name": "plain"}, "revision": 1, "from": "dev-gw", "to": to},
    }


def labelled(name: str, **labels: str) -> dict[str, Any]:
    body = agent(name)
    body["metadata"]["labels"] = labels
    return body


@pytest.fixture(scope="module")
def world(
    facade_cluster: Path,
    api_client: client.ApiClient,
    postgres_admin_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    """Organization A (plan pro) with workspaces ml and sandbox, a developer, a
    contractor of a partner company (team contractors) with an org-wide key, a viewer,
    the owner's keys; agents, gateways per environment; the policies above."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(postgres_admin_url, name)
    env = {
        "KAIZEN_POLICY_TEST_CLOCK": "1",
        "KAIZEN_TRUSTED_PROXIES": "127.0.0.1",
        "KAIZEN_AUTH_FAILURE_LIMIT": "1000000",
        "KAIZEN_USER_RATE_LIMIT": "1000000",
    }
    folder = tmp_path_factory.mktemp("policies")
    try:
        with live_facade(
            facade_cluster, api_client, folder, url, env=env, plan="pro", prefix="pol"
        ) as server:
            api = server.api
            w = World(server, api, server.org, {"owner": server.headers})
            ok(w.call("owner", "POST", "/workspaces", {"name": "sandbox"}))
            suffix = uuid.uuid4().hex[:6]
            people = {
                "dev": (f"dev-{suffix}@corp.example", "developer"),
                "contractor": (f"ctr-{suffix}@partner.test", "developer"),
                "viewer": (f"view-{suffix}@corp.example", "viewer"),
            }
            for who, (email, role) in people.items():
                w.headers[who] = login(api, email)
                ok(w.call("owner", "POST", "/members", {"email": email, "role": role}))
                for ws in ("ml", "sandbox"):
                    ws_role = "viewer" if role == "viewer" else "developer"
                    body = {"subject": f"user:{email}", "role": ws_role}
                    ok(w.call("owner", "PUT", f"/workspaces/{ws}/members", body), 200)
            ok(w.call("owner", "POST", "/teams", {"name": "contractors"}))
            body = {"email": people["contractor"][0]}
            ok(w.call("owner", "POST", "/teams/contractors/members", body))
            key = {"name": "ci", "permissions": ["agents:*", "workspaces:read"]}
            secret = ok(w.call("contractor", "POST", "/keys", key))["key"]
            w.headers["contractor-key"] = {"authorization": f"Bearer {secret}"}
            w.headers["owner-wildcard-key"] = {
                "authorization": f"Bearer {server.api_key('all', ['*:*'])}"
            }
            w.headers["owner-read-key"] = {
                "authorization": f"Bearer {server.api_key('reader', ['agents:read'])}"
            }
            ok(
                w.call(
                    "owner", "POST", "/workspaces/ml/agents", labelled("critical", tier="critical")
                )
            )
            ok(w.call("owner", "POST", "/workspaces/ml/agents", labelled("plain")))
            ok(w.call("owner", "POST", "/workspaces/sandbox/agents", labelled("plain")))
            for gw, environment in (
                ("dev-gw", "dev"),
                ("stage-gw", "staging"),
                ("prod-gw", "production"),
            ):
                ok(w.call("owner", "POST", "/workspaces/ml/gateways", gateway(gw, environment)))
            for policy, text in POLICIES.items():
                ok(w.call("owner", "PUT", f"/policies/{policy}", {"cedar": text}))
            yield w
    finally:
        postgres.drop_database(postgres_admin_url, name)


@dataclass(frozen=True)
class Row:
    name: str
    who: str
    method: str
    path: str
    body: Any
    status: int
    policy: str | None = None  # the policy the denial names
    time: str = WEDNESDAY_NOON
    ip: str = OFFICE_IP


ROWS = [
    # labels: a forbid beats the developer's and even the owner's role permission
    Row(
        "dev deletes a critical agent",
        "dev",
        "DELETE",
        "/workspaces/ml/agents/critical",
        None,
        403,
        "no-critical-deletes",
    ),
    Row(
        "owner deletes a critical agent",
        "owner",
        "DELETE",
        "/workspaces/ml/agents/critical",
        None,
        403,
        "no-critical-deletes",
    ),
    Row("dev deletes an absent agent", "dev", "DELETE", "/workspaces/ml/agents/ghost", None, 404),
    Row("dev lists agents", "dev", "GET", "/workspaces/ml/agents", None, 200),
    # time windows on a Promotion's target environment
    Row(
        "dev promotes to production at noon",
        "dev",
        "POST",
        "/workspaces/ml/promotions",
        promotion("prod-gw"),
        201,
    ),
    Row(
        "dev promotes to production at night",
        "dev",
        "POST",
        "/workspaces/ml/promotions",
        promotion("prod-gw"),
        403,
        "prod-promotions-working-hours",
        WEDNESDAY_EVENING,
    ),
    Row(
        "dev promotes to production on Saturday",
        "dev",
        "POST",
        "/workspaces/ml/promotions",
        promotion("prod-gw"),
        403,
        "prod-promotions-working-hours",
        SATURDAY_NOON,
    ),
    Row(
        "dev promotes to staging at night",
        "dev",
        "POST",
        "/workspaces/ml/promotions",
        promotion("stage-gw"),
        201,
        None,
        WEDNESDAY_EVENING,
    ),
    Row(
        "owner promotes to production at night",
        "owner",
        "POST",
        "/workspaces/ml/promotions",
        promotion("prod-gw"),
        201,
        None,
        WEDNESDAY_EVENING,
    ),
    # teams x API keys x workspaces
    Row(
        "contractor key reads the sandbox",
        "contractor-key",
        "GET",
        "/workspaces/sandbox/agents",
        None,
        200,
    ),
    Row(
        "contractor key writes the sandbox",
        "contractor-key",
        "POST",
        "/workspaces/sandbox/agents",
        agent("from-ci"),
        201,
    ),
    Row(
        "contractor key reads ml",
        "contractor-key",
        "GET",
        "/workspaces/ml/agents",
        None,
        403,
        "contractor-keys-sandbox-only",
    ),
    Row(
        "contractor key writes ml",
        "contractor-key",
        "POST",
        "/workspaces/ml/agents",
        agent("from-ci"),
        403,
        "contractor-keys-sandbox-only",
    ),
    Row(
        "contractor key lists workspaces (org level)",
        "contractor-key",
        "GET",
        "/workspaces",
        None,
        403,
        "contractor-keys-sandbox-only",
    ),
    Row("contractor login reads ml", "contractor", "GET", "/workspaces/ml/agents", None, 200),
    # email domain
    Row(
        "partner edits an ml agent",
        "contractor",
        "PUT",
        "/workspaces/ml/agents/plain",
        agent("plain"),
        403,
        "partners-do-not-edit-ml-agents",
    ),
    Row(
        "partner edits a sandbox agent",
        "contractor",
        "PUT",
        "/workspaces/sandbox/agents/plain",
        agent("plain"),
        428,
    ),
    Row("dev edits an ml agent", "dev", "PUT", "/workspaces/ml/agents/plain", agent("plain"), 428),
    # source address ranges (X-Forwarded-For from the trusted proxy)
    Row(
        "dev changes a gateway from the office",
        "dev",
        "POST",
        "/workspaces/ml/gateways",
        gateway("office-gw", "dev"),
        201,
    ),
    Row(
        "dev changes a gateway from home",
        "dev",
        "POST",
        "/workspaces/ml/gateways",
        gateway("home-gw", "dev"),
        403,
        "gateway-changes-from-office",
        WEDNESDAY_NOON,
        HOME_IP,
    ),
    Row(
        "dev reads gateways from home",
        "dev",
        "GET",
        "/workspaces/ml/gateways",
        None,
        200,
        None,
        WEDNESDAY_NOON,
        HOME_IP,
    ),
    Row(
        "owner deletes a gateway from home",
        "owner",
        "DELETE",
        "/workspaces/ml/gateways/stage-gw",
        None,
        403,
        "gateway-changes-from-office",
        WEDNESDAY_NOON,
        HOME_IP,
    ),
    # key scopes
    Row(
        "wildcard key reads",
        "owner-wildcard-key",
        "GET",
        "/workspaces/ml/agents",
        None,
        403,
        "no-wildcard-keys",
    ),
    Row(
        "wildcard key at org level",
        "owner-wildcard-key",
        "GET",
        "/members",
        None,
        403,
        "no-wildcard-keys",
    ),
    Row("narrow key reads", "owner-read-key", "GET", "/workspaces/ml/agents/plain", None, 200),
    # roles decide first: a role's refusal is not a policy's
    Row("viewer deletes", "viewer", "DELETE", "/workspaces/ml/agents/plain", None, 403),
    Row("owner lists members", "owner", "GET", "/members", None, 200),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_requests_against_policies(world: World, row: Row) -> None:
    answer = world.call(row.who, row.method, row.path, row.body, time=row.time, ip=row.ip)
    assert answer.status_code == row.status, answer.text
    problem = answer.json() if answer.status_code >= 400 else {}
    if row.policy is not None:
        assert problem["code"] == "policy-denied"
        assert problem["policies"] == [row.policy]
        assert row.policy in problem["detail"]
    elif answer.status_code == 403:
        assert problem["code"] != "policy-denied", problem  # the role refused, not a policy


def test_table_covers_every_kind_of_condition() -> None:
    denied_by = {r.policy for r in ROWS if r.policy}
    assert denied_by == set(POLICIES)
    assert len(ROWS) >= 20


def test_invalid_policies_are_refused_with_the_engines_message(world: World) -> None:
    cases = {
        'forbid (principal, action, resource) when { resource.labels == "x" };': (
            "attribute `labels` on entity type `Kaizen::Resource` not found"
        ),
        'forbid (principal, action, resource) when { context.hour == "nine" };': (
            "the types Long and String are not compatible"
        ),
        'forbid (principal, action == Kaizen::Action::"destroy", resource);': "destroy",
        "forbid (principal, action, resource) when {": "parse error",
    }
    for text, message in cases.items():
        answer = world.call("owner", "PUT", "/policies/broken", {"cedar": text})
        assert answer.status_code == 422, answer.text
        problem = answer.json()
        assert problem["code"] == "invalid-policy"
        assert message in problem["detail"], problem
    assert world.call("owner", "GET", "/policies/broken").status_code == 404  # nothing saved


def test_the_schema_is_published(world: World) -> None:
    schema = httpx.get(f"{world.api}/policies/schema", timeout=30)
    assert schema.status_code == 200
    assert "entity Resource in [Workspace]" in schema.text and "tags String" in schema.text


def test_dry_run_says_whether_and_which_policy(world: World) -> None:
    check = {"permission": "agents:delete", "workspace": "ml", "name": "critical"}
    forbidden = ok(
        world.call("owner", "POST", "/policy-check", {**check, "labels": {"tier": "critical"}}), 200
    )
    assert forbidden["allowed"] is False and forbidden["policies"] == ["no-critical-deletes"]
    assert forbidden["roleAllowed"] is True
    allowed = ok(world.call("owner", "POST", "/policy-check", check), 200)
    assert allowed["allowed"] is True and allowed["reason"] == "roles"
    contractor = {
        "user": world_email(world, "contractor"),
        "apiKey": {"scopes": ["agents:read"]},
        "permission": "agents:read",
        "workspace": "ml",
    }
    judged = ok(world.call("owner", "POST", "/policy-check", contractor), 200)
    assert judged["policies"] == ["contractor-keys-sandbox-only"]
    night = {
        "user": world_email(world, "dev"),
        "permission": "promotions:create",
        "workspace": "ml",
        "targetEnvironment": "production",
        "time": WEDNESDAY_EVENING,
    }
    assert ok(world.call("owner", "POST", "/policy-check", night), 200)["policies"] == [
        "prod-promotions-working-hours"
    ]
    viewer = {
        "user": world_email(world, "viewer"),
        "permission": "agents:delete",
        "workspace": "ml",
    }
    refused = ok(world.call("owner", "POST", "/policy-check", viewer), 200)
    assert (refused["allowed"], refused["roleAllowed"], refused["reason"]) == (
        False,
        False,
        "role-denied",
    )
    # a candidate is judged before it is saved
    candidate = {
        "name": "reads-from-office",
        "cedar": 'forbid (principal, action, resource) unless { context.sourceIp.isInRange(ip("10.0.0.0/8")) };',
    }
    home = {
        "permission": "agents:read",
        "workspace": "ml",
        "sourceIp": HOME_IP,
        "policy": candidate,
    }
    assert ok(world.call("owner", "POST", "/policy-check", home), 200)["policies"] == [
        "reads-from-office"
    ]
    assert world.call("owner", "GET", "/policies/reads-from-office").status_code == 404


def world_email(world: World, who: str) -> str:
    me = httpx.get(f"{world.api}/auth/me", headers=world.headers[who], timeout=30).json()
    return str(me["email"])


def test_policies_are_managed_by_owners_and_admins_only(world: World) -> None:
    for who in ("dev", "viewer", "contractor"):
        assert world.call(who, "GET", "/policies").status_code == 403
        answer = world.call(
            who, "PUT", "/policies/mine", {"cedar": "permit (principal, action, resource);"}
        )
        assert answer.status_code == 403
    listed = ok(world.call("owner", "GET", "/policies"), 200)
    assert {p["name"] for p in listed["items"]} >= set(POLICIES) and listed["mode"] == "restrict"


def test_organizations_never_share_policies(world: World) -> None:
    """Org B forbids everything to itself; org A is untouched, and neither can read,
    change or dry-run against the other's policies."""
    api = world.api
    b_owner = login(api, f"b-{uuid.uuid4().hex[:6]}@corp.example")
    b_org = f"b{uuid.uuid4().hex[:8]}"
    ok(httpx.post(f"{api}/orgs", json={"slug": b_org, "name": b_org}, headers=b_owner, timeout=30))
    world.headers["b-owner"] = b_owner
    ok(
        world.call(
            "b-owner",
            "PUT",
            "/policies/deny-everything",
            {"cedar": "forbid (principal, action, resource);"},
            org=b_org,
        ),
        201,
    )
    denied = world.call("b-owner", "GET", "/members", org=b_org)
    assert denied.status_code == 403 and denied.json()["policies"] == ["deny-everything"]
    assert world.call("owner", "GET", "/members").status_code == 200
    assert world.call("dev", "GET", "/workspaces/ml/agents").status_code == 200
    for method, path, body in (
        ("GET", "/policies", None),
        ("GET", "/policies/deny-everything", None),
        ("PUT", "/policies/deny-everything", {"cedar": "permit (principal, action, resource);"}),
        ("DELETE", "/policies/deny-everything", None),
        ("POST", "/policy-check", {"permission": "orgs:read"}),
        ("PUT", "/policy-mode", {"mode": "restrict"}),
    ):
        answer = world.call("owner", method, path, body, org=b_org)
        assert answer.status_code == 404, (method, path, answer.text)
        answer = world.call("b-owner", method, path, body, org=world.org)
        assert answer.status_code == 404, (method, path, answer.text)
    # B's owner can still repair B's policies: administration is never subject to them
    ok(world.call("b-owner", "DELETE", "/policies/deny-everything", org=b_org), 204)
    ok(world.call("b-owner", "GET", "/members", org=b_org), 200)


def test_permit_required_mode_needs_a_permit(world: World) -> None:
    api = world.api
    owner = login(api, f"c-{uuid.uuid4().hex[:6]}@corp.example")
    org = f"c{uuid.uuid4().hex[:8]}"
    ok(httpx.post(f"{api}/orgs", json={"slug": org, "name": org}, headers=owner, timeout=30))
    world.headers["c-owner"] = owner
    ok(world.call("c-owner", "PUT", "/policy-mode", {"mode": "permit-required"}, org=org), 200)
    refused = world.call("c-owner", "GET", "/members", org=org)
    assert refused.status_code == 403
    assert refused.json()["policies"] == [] and "permit-required" in refused.json()["detail"]
    reads = 'permit (principal, action == Kaizen::Action::"read", resource) when { principal.role == "org_owner" };'
    ok(world.call("c-owner", "PUT", "/policies/owners-read", {"cedar": reads}, org=org), 201)
    ok(world.call("c-owner", "GET", "/members", org=org), 200)
    created = world.call("c-owner", "POST", "/teams", {"name": "t"}, org=org)
    assert created.status_code == 403 and created.json()["code"] == "policy-denied"


def test_policy_changes_are_audited(world: World) -> None:
    ok(
        world.call(
            "owner",
            "PUT",
            "/policies/audited",
            {"cedar": "forbid (principal, action, resource) when { false };"},
        ),
        201,
    )
    ok(world.call("owner", "DELETE", "/policies/audited"), 204)
    records = ok(world.call("owner", "GET", "/audit?action=/policies/", None), 200)
    seen = {(r["action"], r["resource"].rsplit("/", 1)[-1], r["outcome"]) for r in records}
    assert ("PUT /orgs/{org}/policies/{name}", "audited", 201) in seen
    assert ("DELETE /orgs/{org}/policies/{name}", "audited", 204) in seen
    assert all(
        r["actor"] == world.server.email for r in records if r["resource"].endswith("/audited")
    )


def test_cli_applies_lists_checks_and_deletes(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from kaizen_api.cli import commands, policies  # noqa: F401 - registers the commands
    from kaizen_api.cli.__main__ import app

    token = world.headers["owner"]["authorization"].removeprefix("Bearer ")
    credentials = tmp_path / "credentials.json"
    saved = {"url": world.server.url, "access_token": token, "org": world.org}
    credentials.write_text(json.dumps(saved))
    monkeypatch.setenv("KAIZEN_CREDENTIALS", str(credentials))
    runner = CliRunner()

    def kaizen(*args: str) -> Any:
        return runner.invoke(app, list(args), catch_exceptions=False)

    policy = tmp_path / "no-friday-deploys.cedar"
    policy.write_text(
        'forbid (principal, action == Kaizen::Action::"create", resource)\n'
        'when { resource.kind == "promotions" && context.dayOfWeek == 5 };'
    )
    assert kaizen("policies", "apply", "-f", str(policy)).exit_code == 0
    listed = kaizen("policies", "list")
    assert listed.exit_code == 0 and "no-friday-deploys" in listed.stdout
    assert "context.dayOfWeek == 5" in kaizen("policies", "get", "no-friday-deploys").stdout
    friday = kaizen(
        "policies", "check", "promotions:create", "-w", "ml", "--at", "2026-12-04T10:00:00"
    )
    assert friday.exit_code == 1 and "no-friday-deploys" in friday.stdout
    thursday = kaizen(
        "policies", "check", "promotions:create", "-w", "ml", "--at", "2026-12-03T10:00:00"
    )
    assert thursday.exit_code == 0 and "allowed" in thursday.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "name: broken\ncedar: 'forbid (principal, action, resource) when { resource.owner == 1 };'\n"
    )
    refused = kaizen("policies", "apply", "-f", str(broken))
    assert refused.exit_code == 1 and "attribute `owner`" in refused.stdout
    assert kaizen("policies", "delete", "no-friday-deploys").exit_code == 0
    assert "no-friday-deploys" not in kaizen("policies", "list").stdout


def test_a_change_reaches_the_other_replica(
    world: World, facade_cluster: Path, tmp_path: Path
) -> None:
    """A second `kaizen-api` on the same database: a policy saved through one replica
    is enforced by the other (its compiled set notices the new version within
    KAIZEN_POLICY_REFRESH, 1 s), and so is its removal."""
    env = {"KAIZEN_POLICY_TEST_CLOCK": "1", "KAIZEN_TRUSTED_PROXIES": "127.0.0.1"}
    process, url = start_facade(facade_cluster, tmp_path, world.server.database_url, env)
    try:
        path = f"{url}/api/v1/orgs/{world.org}/workspaces/sandbox/agents"
        headers = world.headers["contractor-key"]  # keys live in the shared database
        assert httpx.get(path, headers=headers, timeout=30).status_code == 200  # cached there
        text = 'forbid (principal, action, resource) when { resource.workspace == "sandbox" };'
        ok(world.call("owner", "PUT", "/policies/sandbox-closed", {"cedar": text}), 201)
        denied = eventually(
            lambda: (r := httpx.get(path, headers=headers, timeout=30)).status_code == 403 and r,
            timeout=30,
            what="the other replica to apply the new policy",
        )
        assert denied.json()["policies"] == ["sandbox-closed"]
        ok(world.call("owner", "DELETE", "/policies/sandbox-closed"), 204)
        eventually(
            lambda: httpx.get(path, headers=headers, timeout=30).status_code == 200,
            timeout=30,
            what="the other replica to drop the removed policy",
        )
    finally:
        process.stop()
