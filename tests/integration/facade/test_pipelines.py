"""Pipelines through the facade, as agents are: validation as problem+json naming the
field, ETags, revisions and rollback from the operator's ControllerRevisions, the
plan's quota, audit records; and the tenancy attacks (another organization, another
workspace's key, a viewer) all refused with nothing changed."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from tests.support.facade import Facade, User, agent, pipeline


def setup(facade: Facade, plan: str = "pro") -> tuple[User, str, str]:
    owner = facade.user("owner")
    org = facade.org(owner, plan=plan)
    facade.workspace(owner, org, "ml")
    return owner, org, f"/orgs/{org}/workspaces/ml"


def fields(r: Any) -> dict[str, str]:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "invalid-resource"
    return {e["field"]: e["message"] for e in r.json()["errors"]}


def test_pipelines_are_written_read_and_validated_like_agents(facade: Facade) -> None:
    owner, org, ws = setup(facade)
    created = facade.call("POST", f"{ws}/pipelines", owner, json=pipeline("triage", "a", "b"))
    assert created.status_code == 201, created.text
    assert created.json()["kind"] == "Pipeline" and created.json()["metadata"]["namespace"]
    listed = facade.call("GET", f"{ws}/pipelines", owner).json()["items"]
    assert [p["metadata"]["name"] for p in listed] == ["triage"]

    got = facade.call("GET", f"{ws}/pipelines/triage", owner)
    body = got.json()
    body["spec"]["steps"][1]["input"] = "Check: {{previous}} (asked: {{input}})"
    stale_etag = got.headers["etag"]
    put = facade.call(
        "PUT", f"{ws}/pipelines/triage", owner, json=body, headers={"if-match": stale_etag}
    )
    assert put.status_code == 200, put.text
    stale = facade.call(
        "PUT", f"{ws}/pipelines/triage", owner, json=body, headers={"if-match": stale_etag}
    )
    assert stale.status_code == 409 and stale.json()["code"] == "conflict"

    # Invalid Pipelines: the field is named, with a message saying what to do.
    no_router = pipeline("r", "a", pattern="Router")
    assert (
        "router block"
        in fields(facade.call("POST", f"{ws}/pipelines", owner, json=no_router))["spec"]
    )
    bad_template = pipeline("t", "a")
    bad_template["spec"]["steps"][0]["input"] = "{{secrets}}"
    errors = fields(facade.call("POST", f"{ws}/pipelines", owner, json=bad_template))
    assert "unknown template field {{secrets}}" in errors["spec.steps.0"]
    two_targets = pipeline("x", "a")
    two_targets["spec"]["steps"][0]["pipelineRef"] = {"name": "other"}
    errors = fields(facade.call("POST", f"{ws}/pipelines", owner, json=two_targets))
    assert "exactly one of agentRef or pipelineRef" in errors["spec.steps.0"]
    bad_pattern = pipeline("p", "a", pattern="Chain")
    assert "spec.pattern" in fields(facade.call("POST", f"{ws}/pipelines", owner, json=bad_pattern))
    bad_name = facade.call("GET", f"{ws}/pipelines/Not_A_Name", owner)
    assert bad_name.status_code == 422
    assert facade.call("GET", f"{ws}/pipelines/r", owner).status_code == 404  # nothing stored

    assert facade.call("DELETE", f"{ws}/pipelines/triage", owner).status_code == 204
    assert facade.call("GET", f"{ws}/pipelines/triage", owner).status_code == 404
    actions = [
        (r["action"], r["outcome"], r["resource"])
        for r in facade.call("GET", f"/orgs/{org}/audit", owner).json()
        if r["resource"].startswith(f"/api/v1{ws}/pipelines")
    ]
    assert ("POST /orgs/{org}/workspaces/{ws}/{kind}", 201, f"/api/v1{ws}/pipelines") in actions
    assert (
        "DELETE /orgs/{org}/workspaces/{ws}/{kind}/{name}",
        204,
        f"/api/v1{ws}/pipelines/triage",
    ) in actions
    assert sum(1 for a in actions if a[1] == 422) == 4  # refused writes are audited too


def test_pipeline_revisions_and_rollback(facade: Facade, api_client: client.ApiClient) -> None:
    """The facade reads the revisions the operator keeps (ControllerRevisions labelled
    kaizen.studio/pipeline=<name>) and rolls back to one's content; an Agent's
    revisions of the same name are not a Pipeline's."""
    owner, _org, ws = setup(facade)
    created = facade.call("POST", f"{ws}/pipelines", owner, json=pipeline("flow", "a", "b"))
    assert created.status_code == 201, created.text
    namespace = created.json()["metadata"]["namespace"]
    apps = client.AppsV1Api(api_client)
    first = pipeline("flow", "a")["spec"]
    for label, number, spec in (
        ("kaizen.studio/pipeline", 1, first),
        ("kaizen.studio/agent", 2, agent("flow")["spec"]),
    ):
        apps.create_namespaced_controller_revision(
            namespace,
            {
                "metadata": {
                    "name": f"flow-{label.rsplit('/', 1)[1]}-r{number}",
                    "labels": {label: "flow", "kaizen.studio/revision-hash": f"h{number}"},
                },
                "revision": number,
                "data": {"spec": spec},
            },
        )
    revisions = facade.call("GET", f"{ws}/pipelines/flow/revisions", owner).json()
    assert [(r["revision"], r["hash"]) for r in revisions] == [(1, "h1")]
    assert revisions[0]["spec"]["steps"] == first["steps"]

    missing = facade.call("POST", f"{ws}/pipelines/flow/rollback", owner, json={"revision": 2})
    assert missing.status_code == 404 and "no revision 2" in missing.json()["detail"]
    rolled = facade.call("POST", f"{ws}/pipelines/flow/rollback", owner, json={"revision": 1})
    assert rolled.status_code == 200, rolled.text
    assert [s["name"] for s in rolled.json()["spec"]["steps"]] == ["a"]


def test_pipelines_count_against_the_plan(facade: Facade, api_client: client.ApiClient) -> None:
    owner, org, ws = setup(facade, plan="free")
    quota = client.CoreV1Api(api_client).read_namespaced_resource_quota(
        "kaizen-plan", f"kz-{org}--ml"
    )
    assert quota.spec.hard["count/pipelines.kaizen.studio"] == "10"
    for i in range(10):
        r = facade.call("POST", f"{ws}/pipelines", owner, json=pipeline(f"p{i}"))
        assert r.status_code == 201, r.text
    r = facade.call("POST", f"{ws}/pipelines", owner, json=pipeline("p10"))
    assert r.status_code == 403 and r.json()["code"] == "quota-exceeded"
    assert "count/pipelines.kaizen.studio" in r.json()["detail"]
    # Agents are counted apart: a workspace full of pipelines still takes agents.
    assert facade.call("POST", f"{ws}/agents", owner, json=agent("a")).status_code == 201


def test_another_organization_cannot_reach_pipelines(facade: Facade) -> None:
    owner, _org, ws = setup(facade)
    assert facade.call("POST", f"{ws}/pipelines", owner, json=pipeline("mine")).status_code == 201
    attacker = facade.user("attacker")
    facade.org(attacker)  # a member of another organization only
    for method, path, body in (
        ("GET", f"{ws}/pipelines", None),
        ("GET", f"{ws}/pipelines/mine", None),
        ("GET", f"{ws}/pipelines/mine/revisions", None),
        ("POST", f"{ws}/pipelines", pipeline("theirs")),
        ("PUT", f"{ws}/pipelines/mine", pipeline("mine", "b")),
        ("POST", f"{ws}/pipelines/mine/rollback", {"revision": 1}),
        ("DELETE", f"{ws}/pipelines/mine", None),
    ):
        r = facade.call(method, path, attacker, json=body)
        # 404: another tenant's organization does not exist for the attacker.
        assert r.status_code == 404 and r.json()["title"] == "No such organization", (method, path)
    names = [
        p["metadata"]["name"] for p in facade.call("GET", f"{ws}/pipelines", owner).json()["items"]
    ]
    assert names == ["mine"]
    assert (
        facade.call("GET", f"{ws}/pipelines/mine", owner).json()["spec"]["steps"][0]["name"] == "a"
    )


def test_workspace_keys_and_viewers_are_confined(facade: Facade) -> None:
    owner, org, ws = setup(facade)
    facade.workspace(owner, org, "prod")
    prod = f"/orgs/{org}/workspaces/prod"
    assert facade.call("POST", f"{prod}/pipelines", owner, json=pipeline("live")).status_code == 201
    r = facade.call(
        "POST",
        f"/orgs/{org}/keys",
        owner,
        json={"name": "ci", "workspace": "ml", "permissions": ["pipelines:*"]},
    )
    assert r.status_code == 201, r.text
    key = {"authorization": f"Bearer {r.json()['key']}"}
    mine = facade.call("POST", f"{ws}/pipelines", headers=key, json=pipeline("ci"))
    assert mine.status_code == 201, mine.text
    for method, path, body in (
        ("GET", f"{prod}/pipelines", None),
        ("GET", f"{prod}/pipelines/live", None),
        ("POST", f"{prod}/pipelines", pipeline("planted")),
        ("DELETE", f"{prod}/pipelines/live", None),
    ):
        r = facade.call(method, path, headers=key, json=body)
        assert r.status_code == 403 and "another workspace" in r.json()["detail"], (method, path)
    agents = facade.call("GET", f"{ws}/agents", headers=key)  # scope: pipelines only
    assert agents.status_code == 403 and "does not grant agents:read" in agents.json()["detail"]

    viewer = facade.user("viewer")
    facade.member(owner, org, viewer, "viewer")
    facade.ws_member(owner, org, "prod", f"user:{viewer.email}", "viewer")
    assert facade.call("GET", f"{prod}/pipelines/live", viewer).status_code == 200
    for method, path, body in (
        ("POST", f"{prod}/pipelines", pipeline("planted")),
        ("PUT", f"{prod}/pipelines/live", pipeline("live", "b")),
        ("POST", f"{prod}/pipelines/live/rollback", {"revision": 1}),
        ("DELETE", f"{prod}/pipelines/live", None),
    ):
        r = facade.call(method, path, viewer, json=body)
        assert r.status_code == 403 and "does not grant pipelines:" in r.json()["detail"], (
            method,
            path,
        )
    names = [
        p["metadata"]["name"]
        for p in facade.call("GET", f"{prod}/pipelines", owner).json()["items"]
    ]
    assert names == ["live"]
