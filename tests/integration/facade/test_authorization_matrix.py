"""Every role x every kind of endpoint x own workspace / other workspace / other
organization: allowed or denied as the roles say, zero cross-tenant reads or writes,
and exactly one audit record per mutating request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from sqlmodel import Session, func, select

from kaizen_api.server.models import AuditRecord
from tests.support.facade import Facade, User, agent

ROLES = ("org_owner", "org_admin", "developer", "viewer", "billing_admin", "outsider")


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str  # {org} {other} formatted per tenant; {agent} the agent the call targets
    body: Any
    allowed: frozenset[str]
    denied_status: int = 403


ALL_MEMBERS = frozenset({"org_owner", "org_admin"})
CASES = [
    Case(
        "list own ws",
        "GET",
        "/orgs/{org}/workspaces/ml/agents",
        None,
        ALL_MEMBERS | {"developer", "viewer"},
    ),
    Case(
        "read own ws",
        "GET",
        "/orgs/{org}/workspaces/ml/agents/base",
        None,
        ALL_MEMBERS | {"developer", "viewer"},
    ),
    Case(
        "create in own ws",
        "POST",
        "/orgs/{org}/workspaces/ml/agents",
        "new",
        ALL_MEMBERS | {"developer"},
    ),
    Case(
        "replace in own ws",
        "PUT",
        "/orgs/{org}/workspaces/ml/agents/base",
        "replace",
        ALL_MEMBERS | {"developer"},
    ),
    Case(
        "delete in own ws",
        "DELETE",
        "/orgs/{org}/workspaces/ml/agents/{agent}",
        None,
        ALL_MEMBERS | {"developer"},
    ),
    Case(
        "override scaling in own ws",
        "PUT",
        "/orgs/{org}/workspaces/ml/scalingpolicies/base/override",
        {"mode": "Pin", "replicas": 2, "reason": "test"},
        ALL_MEMBERS | {"developer"},
    ),
    Case("list other ws", "GET", "/orgs/{org}/workspaces/ops/agents", None, ALL_MEMBERS),
    Case("create in other ws", "POST", "/orgs/{org}/workspaces/ops/agents", "new", ALL_MEMBERS),
    Case("create workspace", "POST", "/orgs/{org}/workspaces", "workspace", ALL_MEMBERS),
    Case("add member", "POST", "/orgs/{org}/members", "member", ALL_MEMBERS),
    Case("read audit", "GET", "/orgs/{org}/audit", None, ALL_MEMBERS),
    Case(
        "create api key",
        "POST",
        "/orgs/{org}/keys",
        {"name": "k", "permissions": ["*:read"]},
        ALL_MEMBERS | {"developer"},
    ),
    Case(
        "create webhook",
        "POST",
        "/orgs/{org}/webhooks",
        {"url": "http://127.0.0.1:9/hook", "events": ["promotion.*"]},
        ALL_MEMBERS,
    ),
    Case("list webhooks", "GET", "/orgs/{org}/webhooks", None, ALL_MEMBERS),
    Case(
        "list other org's ws", "GET", "/orgs/{other}/workspaces/ml/agents", None, frozenset(), 404
    ),
    Case(
        "create in other org's ws",
        "POST",
        "/orgs/{other}/workspaces/ml/agents",
        "new",
        frozenset(),
        404,
    ),
    Case("read other org", "GET", "/orgs/{other}", None, frozenset(), 404),
]


def _audit_count(facade: Facade) -> int:
    engine = facade.client.app.state.kaizen.engine
    with Session(engine) as db:
        return int(db.exec(select(func.count()).select_from(AuditRecord)).one())


def _scaling_policy() -> dict[str, Any]:
    return {
        "metadata": {"name": "base"},
        "spec": {
            "targetRef": {"name": "gw"},
            "minReplicas": 1,
            "maxReplicas": 3,
            "metrics": [{"type": "cpu", "averageUtilization": 70}],
        },
    }


def test_authorization_matrix(facade: Facade) -> None:
    owner = facade.user("owner")
    org = facade.org(owner, plan="pro")
    other_owner = facade.user("stranger-owner")
    other = facade.org(other_owner, plan="pro")
    facade.workspace(other_owner, other, "ml")
    for ws in ("ml", "ops"):
        facade.workspace(owner, org, ws)
    users: dict[str, User] = {"org_owner": owner}
    for role in ("org_admin", "developer", "viewer", "billing_admin"):
        users[role] = facade.user(role.replace("_", "-"))
        facade.member(owner, org, users[role], role)
    facade.ws_member(owner, org, "ml", f"user:{users['developer'].email}", "developer")
    facade.ws_member(owner, org, "ml", f"user:{users['viewer'].email}", "viewer")
    users["outsider"] = other_owner
    for tenant, ws_owner in ((org, owner), (other, other_owner)):
        r = facade.call(
            "POST", f"/orgs/{tenant}/workspaces/ml/agents", ws_owner, json=agent("base")
        )
        assert r.status_code == 201, r.text
    r = facade.call(
        "POST", f"/orgs/{org}/workspaces/ml/scalingpolicies", owner, json=_scaling_policy()
    )
    assert r.status_code == 201, r.text

    outcomes: dict[tuple[str, str], int] = {}
    for role in ROLES:
        user = users[role]
        for n, case in enumerate(CASES):
            if role == "outsider" and "{other}" in case.path:
                continue  # that is the outsider's own organization
            target = f"victim-{role.replace('_', '-')}-{n}"
            if case.method == "DELETE":
                created = facade.call(
                    "POST", f"/orgs/{org}/workspaces/ml/agents", owner, json=agent(target)
                )
                assert created.status_code == 201, created.text
            path = case.path.format(org=org, other=other, agent=target)
            body = case.body
            if body == "new":
                body = agent(f"n-{role.replace('_', '-')}-{n}")
            elif body == "replace":
                current = facade.call("GET", path, owner).json()
                body = {**current, "spec": {**current["spec"], "systemPrompt": role}}
            elif body == "workspace":
                body = {"name": f"w-{role.replace('_', '-')}"}
            elif body == "member":
                body = {"email": facade.user(f"m-{role}").email, "role": "viewer"}
            before = _audit_count(facade)
            r = facade.call(case.method, path, user, json=body)
            outcomes[(role, case.name)] = r.status_code
            # The outsider belongs to another organization: this one does not exist for them.
            denied = 404 if role == "outsider" else case.denied_status
            if role in case.allowed:
                assert r.status_code < 300, f"{role} {case.name}: {r.status_code} {r.text}"
            else:
                assert r.status_code == denied, f"{role} {case.name}: {r.text}"
                assert r.headers["content-type"] == "application/problem+json"
            mutating = case.method != "GET"
            assert _audit_count(facade) - before == (1 if mutating else 0), (role, case.name)

    # Zero cross-tenant effects: the other org's workspace holds only its own agent.
    listed = facade.call("GET", f"/orgs/{other}/workspaces/ml/agents", other_owner).json()
    assert [a["metadata"]["name"] for a in listed["items"]] == ["base"]
    outsider_reads = [k for k, v in outcomes.items() if k[0] == "outsider" and v < 300]
    assert outsider_reads == []


@pytest.mark.parametrize("header", ["Impersonate-User", "Impersonate-Group", "impersonate-uid"])
def test_client_impersonation_headers_are_refused(facade: Facade, header: str) -> None:
    owner = facade.user("owner")
    org = facade.org(owner)
    r = facade.call("GET", f"/orgs/{org}", owner, headers={header: "system:admin"})
    assert r.status_code == 400 and r.json()["code"] == "impersonation-refused"
