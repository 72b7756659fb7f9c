"""M5: removing a member removes their grants with them: workspace roles, team places,
API keys and the RoleBinding subjects. Added back as a viewer, they are a viewer only."""

from __future__ import annotations

from kubernetes import client

from tests.support.facade import Facade


def test_removed_members_grants_do_not_come_back(
    facade: Facade, api_client: client.ApiClient
) -> None:
    owner, bob = facade.user("owner"), facade.user("bob")
    org = facade.org(owner, plan="pro")
    ns = facade.workspace(owner, org, "prod")
    facade.member(owner, org, bob, "developer")
    facade.ws_member(owner, org, "prod", f"user:{bob.email}", "admin")
    assert facade.call("POST", f"/orgs/{org}/teams", owner, json={"name": "ops"}).status_code == 201
    r = facade.call("POST", f"/orgs/{org}/teams/ops/members", owner, json={"email": bob.email})
    assert r.status_code == 201, r.text
    facade.ws_member(owner, org, "prod", "team:ops", "admin")
    r = facade.call("POST", f"/orgs/{org}/keys", bob, json={"name": "k", "permissions": ["*:*"]})
    key = {"authorization": f"Bearer {r.json()['key']}"}
    bob_id = next(
        m["user_id"]
        for m in facade.call("GET", f"/orgs/{org}/members", owner).json()
        if m["email"] == bob.email
    )

    assert facade.call("DELETE", f"/orgs/{org}/members/{bob_id}", owner).status_code == 204
    rbac = client.RbacAuthorizationV1Api(api_client)
    named = {s.name for b in rbac.list_namespaced_role_binding(ns).items for s in b.subjects or []}
    assert f"kaizen:{bob.email}" not in named

    facade.member(owner, org, bob, "viewer")
    got = facade.call("GET", f"/orgs/{org}/workspaces/prod", bob)
    assert got.status_code == 403, got.text  # a viewer of the org has no workspace role
    teams = facade.call("GET", f"/orgs/{org}/teams", owner).json()
    assert teams == [{"name": "ops", "members": []}]
    old_key = facade.call("GET", f"/orgs/{org}/workspaces/prod/agents", headers=key)
    assert old_key.status_code == 401, old_key.text
    assert old_key.json()["detail"] == "this API key was revoked"
