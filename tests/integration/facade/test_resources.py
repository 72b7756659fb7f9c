"""Resources through the facade: validation as problem+json, ETags and 409 on stale
writes, pagination, revisions and rollback, gateway status, scaling overrides."""

from __future__ import annotations

from typing import Any

from tests.support.facade import Facade, agent


def setup(facade: Facade) -> tuple[Any, str, str]:
    owner = facade.user("owner")
    org = facade.org(owner, plan="pro")
    facade.workspace(owner, org, "ml")
    return owner, org, f"/orgs/{org}/workspaces/ml"


def test_invalid_resources_get_field_errors(facade: Facade) -> None:
    owner, _org, ws = setup(facade)
    bad = agent("bad")
    bad["spec"]["model"]["provider"] = "nope"
    r = facade.call("POST", f"{ws}/agents", owner, json=bad)
    assert r.status_code == 422 and r.json()["code"] == "invalid-resource"
    assert any(e["field"] == "spec.model.provider" for e in r.json()["errors"])
    elsewhere = agent("x")
    elsewhere["metadata"]["namespace"] = "kube-system"
    r = facade.call("POST", f"{ws}/agents", owner, json=elsewhere)
    assert r.status_code == 422 and "this workspace" in r.json()["detail"]
    assert facade.call("POST", f"{ws}/widgets", owner, json={}).status_code == 422
    dup = facade.call("POST", f"{ws}/agents", owner, json=agent("a"))
    assert dup.status_code == 201
    again = facade.call("POST", f"{ws}/agents", owner, json=agent("a"))
    assert again.status_code == 409 and again.json()["code"] == "conflict"


def test_stale_writes_conflict_and_lists_paginate(facade: Facade) -> None:
    owner, _org, ws = setup(facade)
    created = facade.call("POST", f"{ws}/agents", owner, json=agent("a"))
    etag = created.headers["etag"]
    body = created.json()
    body["spec"]["systemPrompt"] = "first edit"
    no_precondition = {**body, "metadata": {"name": "a"}}
    assert facade.call("PUT", f"{ws}/agents/a", owner, json=no_precondition).status_code == 428
    first = facade.call("PUT", f"{ws}/agents/a", owner, json=body, headers={"if-match": etag})
    assert first.status_code == 200 and first.headers["etag"] != etag
    body["spec"]["systemPrompt"] = "lost update"
    stale = facade.call("PUT", f"{ws}/agents/a", owner, json=body, headers={"if-match": etag})
    assert stale.status_code == 409 and stale.json()["code"] == "conflict"
    assert (
        facade.call("GET", f"{ws}/agents/a", owner).json()["spec"]["systemPrompt"] == "first edit"
    )

    for i in range(4):
        facade.call("POST", f"{ws}/agents", owner, json=agent(f"p{i}"))
    names, token = [], None
    while True:
        params = {"limit": 2, **({"continue": token} if token else {})}
        page = facade.call("GET", f"{ws}/agents", owner, params=params).json()
        assert len(page["items"]) <= 2
        names += [a["metadata"]["name"] for a in page["items"]]
        token = page["continue"]
        if not token:
            break
    assert names == ["a", "p0", "p1", "p2", "p3"]


def test_overrides_and_gateway_status(facade: Facade) -> None:
    owner, _org, ws = setup(facade)
    gw = {
        "metadata": {"name": "prod"},
        "spec": {"environment": "production", "agents": {"names": ["a"]}},
    }
    assert facade.call("POST", f"{ws}/gateways", owner, json=gw).status_code == 201
    policy = {
        "metadata": {"name": "prod"},
        "spec": {
            "targetRef": {"name": "prod"},
            "minReplicas": 2,
            "maxReplicas": 6,
            "metrics": [{"type": "cpu", "averageUtilization": 70}],
        },
    }
    assert facade.call("POST", f"{ws}/scalingpolicies", owner, json=policy).status_code == 201
    pin = {"mode": "Pin", "replicas": 4, "reason": "launch", "expiresAt": "2030-01-01T00:00:00Z"}
    r = facade.call("PUT", f"{ws}/scalingpolicies/prod/override", owner, json=pin)
    assert r.status_code == 200 and r.json()["spec"]["override"]["replicas"] == 4
    bad = facade.call(
        "PUT", f"{ws}/scalingpolicies/prod/override", owner, json={"mode": "Sideways"}
    )
    assert bad.status_code == 422
    cleared = facade.call("DELETE", f"{ws}/scalingpolicies/prod/override", owner)
    assert cleared.status_code == 200 and "override" not in cleared.json()["spec"]
    status = facade.call("GET", f"{ws}/gateways/prod/status", owner).json()
    assert status["name"] == "prod" and status["servedRevisions"] == []


def server_timing(r: Any) -> dict[str, float]:
    parts = (item.strip().split(";dur=") for item in r.headers["server-timing"].split(","))
    return {name: float(ms) for name, ms in parts}


def test_answers_say_how_long_kubernetes_took(facade: Facade) -> None:
    """Server-Timing tells the facade's own time from the apiserver's: a create and a
    read spent time in Kubernetes, within the facade's total; a call that makes no
    Kubernetes call (the caller's own profile) reports none."""
    owner, _org, ws = setup(facade)
    created = facade.call("POST", f"{ws}/agents", owner, json=agent("timed"))
    read = facade.call("GET", f"{ws}/agents/timed", owner)
    for r in (created, read):
        assert r.status_code in (200, 201), r.text
        timing = server_timing(r)
        assert 0 < timing["kube"] <= timing["total"], timing
    me = server_timing(facade.call("GET", "/auth/me", owner))
    assert me["kube"] == 0 and me["total"] > 0
    refused = facade.call("GET", f"{ws}/agents/nothing-here", owner)
    assert refused.status_code == 404 and server_timing(refused)["kube"] > 0
