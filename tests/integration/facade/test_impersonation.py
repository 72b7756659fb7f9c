"""Kubernetes RBAC is the final word: every resource call runs as the caller, so a
facade that wrongly allows something is still refused by the apiserver; and a user in
two teams keeps the rights of both."""

from __future__ import annotations

from kubernetes import client
from sqlmodel import Session, select

from kaizen_api.server.models import User as UserRow
from kaizen_api.server.models import Workspace, WorkspaceMember
from tests.support.facade import Facade, agent


def test_the_apiserver_refuses_what_the_facade_wrongly_allows(facade: Facade) -> None:
    owner, dev = facade.user("owner"), facade.user("dev")
    org = facade.org(owner)
    facade.workspace(owner, org, "ml")
    facade.member(owner, org, dev, "developer")
    # Bypass the facade's own bookkeeping: give dev the developer role in the database
    # only, as a facade bug would, without the RoleBinding that grants it in Kubernetes.
    engine = facade.client.app.state.kaizen.engine
    with Session(engine) as db:
        ws = db.exec(select(Workspace).where(Workspace.namespace == f"kz-{org}--ml")).one()
        user = db.exec(select(UserRow).where(UserRow.email == dev.email)).one()
        db.add(
            WorkspaceMember(
                workspace_id=ws.id, subject_kind="user", subject_id=user.id, role="developer"
            )
        )
        db.commit()
    r = facade.call("POST", f"/orgs/{org}/workspaces/ml/agents", dev, json=agent("sneaky"))
    assert r.status_code == 403
    body = r.json()
    assert body["code"] == "forbidden" and body["title"] == "Kubernetes RBAC refused the request"
    assert f'User "kaizen:{dev.email}" cannot create resource "agents"' in body["detail"]
    # The owner's call goes through: it is the same facade code path.
    assert (
        facade.call(
            "POST", f"/orgs/{org}/workspaces/ml/agents", owner, json=agent("ok")
        ).status_code
        == 201
    )


def test_a_user_in_two_teams_keeps_the_rights_of_both(
    facade: Facade, api_client: client.ApiClient
) -> None:
    owner, pat = facade.user("owner"), facade.user("pat")
    org = facade.org(owner)
    for ws in ("ml", "ops"):
        facade.workspace(owner, org, ws)
    facade.member(owner, org, pat, "developer")
    for team, ws, role in (("readers", "ml", "viewer"), ("builders", "ops", "developer")):
        assert (
            facade.call("POST", f"/orgs/{org}/teams", owner, json={"name": team}).status_code == 201
        )
        r = facade.call(
            "POST", f"/orgs/{org}/teams/{team}/members", owner, json={"email": pat.email}
        )
        assert r.status_code == 201 and r.json()["members"] == [pat.email]
        facade.ws_member(owner, org, ws, f"team:{team}", role)
    binding = client.RbacAuthorizationV1Api(api_client).read_namespaced_role_binding(
        "kaizen-developer", f"kz-{org}--ops"
    )
    assert [s.name for s in binding.subjects] == [f"kaizen:team:{org}:builders"]

    assert facade.call("GET", f"/orgs/{org}/workspaces/ml/agents", pat).status_code == 200
    denied = facade.call("POST", f"/orgs/{org}/workspaces/ml/agents", pat, json=agent("x"))
    assert denied.status_code == 403 and "viewer" in denied.json()["detail"]
    created = facade.call("POST", f"/orgs/{org}/workspaces/ops/agents", pat, json=agent("x"))
    assert created.status_code == 201, created.text
    workspaces = {
        w["name"]: w["role"] for w in facade.call("GET", f"/orgs/{org}/workspaces", pat).json()
    }
    assert workspaces == {"ml": "viewer", "ops": "developer"}
