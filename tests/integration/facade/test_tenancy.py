"""Tenancy: a workspace is a labelled namespace with RoleBindings to the aggregated
ClusterRoles and the plan's ResourceQuota; plan limits are enforced and named."""

from __future__ import annotations

from kubernetes import client

from tests.support.facade import Facade, agent


def test_workspace_becomes_a_namespace_with_bindings_and_quota(
    facade: Facade, api_client: client.ApiClient
) -> None:
    owner, dev = facade.user("owner"), facade.user("dev")
    org = facade.org(owner)
    ns = facade.workspace(owner, org, "ml")
    assert ns == f"kz-{org}--ml"
    core = client.CoreV1Api(api_client)
    labels = core.read_namespace(ns).metadata.labels
    assert labels["kaizen.studio/org"] == org and labels["kaizen.studio/workspace"] == "ml"
    quota = core.read_namespaced_resource_quota("kaizen-plan", ns)
    assert quota.spec.hard == {
        "count/agents.kaizen.studio": "10",
        "count/pipelines.kaizen.studio": "10",
    }

    facade.member(owner, org, dev, "developer")
    facade.ws_member(owner, org, "ml", f"user:{dev.email}", "developer")
    rbac = client.RbacAuthorizationV1Api(api_client)
    binding = rbac.read_namespaced_role_binding("kaizen-developer", ns)
    assert binding.role_ref.name == "kaizen-developer"
    assert [(s.kind, s.name) for s in binding.subjects] == [("User", f"kaizen:{dev.email}")]
    admins = rbac.read_namespaced_role_binding("kaizen-admin", ns)
    assert ("Group", f"kaizen:org:{org}:org_owner") in [(s.kind, s.name) for s in admins.subjects]

    access = facade.call("GET", f"/orgs/{org}/workspaces/ml/access", owner).json()
    assert {
        "role": "developer",
        "cluster_role": "kaizen-developer",
        "subjects": [f"User:kaizen:{dev.email}"],
    } in access
    # The aggregated roles reach the standard ones: a namespace "edit" user sees agents.
    edit = client.RbacAuthorizationV1Api(api_client).read_cluster_role("edit")
    assert any("agents" in (r.resources or []) for r in edit.rules)


def test_plan_quotas_are_enforced_and_named(facade: Facade) -> None:
    owner = facade.user("owner")
    org = facade.org(owner)  # free: 10 agents per workspace, 3 users
    facade.workspace(owner, org, "ml")
    for i in range(10):
        r = facade.call("POST", f"/orgs/{org}/workspaces/ml/agents", owner, json=agent(f"a{i}"))
        assert r.status_code == 201, r.text
    r = facade.call("POST", f"/orgs/{org}/workspaces/ml/agents", owner, json=agent("a10"))
    assert r.status_code == 403 and r.json()["code"] == "quota-exceeded"
    assert (
        "kaizen-plan" in r.json()["detail"] and "count/agents.kaizen.studio" in r.json()["detail"]
    )

    for name in ("b", "c"):
        facade.member(owner, org, facade.user(name), "viewer")
    r = facade.call(
        "POST",
        f"/orgs/{org}/members",
        owner,
        json={"email": facade.user("d").email, "role": "viewer"},
    )
    assert r.status_code == 403
    assert r.json()["code"] == "quota-exceeded" and r.json()["quota"] == "users"


def test_deleting_a_workspace_deletes_its_namespace(
    facade: Facade, api_client: client.ApiClient
) -> None:
    owner = facade.user("owner")
    org = facade.org(owner)
    ns = facade.workspace(owner, org, "tmp")
    assert facade.call("DELETE", f"/orgs/{org}/workspaces/tmp", owner).status_code == 204
    try:
        assert client.CoreV1Api(api_client).read_namespace(ns).status.phase == "Terminating"
    except client.ApiException as exc:
        assert exc.status == 404  # already gone
    assert facade.call("GET", f"/orgs/{org}/workspaces/tmp", owner).status_code == 404
