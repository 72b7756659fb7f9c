"""The facade and the operator together: revisions made by the operator are listed and
rolled back through the facade, and a Promotion approved through the facade records
the authenticated facade user (via the operator's admission webhook)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from tests.support.facade import Facade, agent, pipeline
from tests.support.processes import start_operator


def wait(probe: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out; last {value!r}")


def test_revisions_rollback_and_approval_through_the_facade(
    facade: Facade, crds: Path, tmp_path: Path
) -> None:
    owner, approver, dev = facade.user("owner"), facade.user("approver"), facade.user("dev")
    org = facade.org(owner, plan="pro")
    operator, _ = start_operator(
        crds,
        f"kz-{org}--*",
        tmp_path / "operator.log",
        f"kaizen.studio/org={org}",  # the facade labels its namespaces with the org
    )
    try:
        facade.workspace(owner, org, "ml")
        for user, role in ((approver, "developer"), (dev, "developer")):
            facade.member(owner, org, user, role)
            facade.ws_member(owner, org, "ml", f"user:{user.email}", "developer")
        ws = f"/orgs/{org}/workspaces/ml"
        assert (
            facade.call("POST", f"{ws}/agents", owner, json=agent("hello", "v1")).status_code == 201
        )
        for name, env in (("dev", "dev"), ("staging", "staging")):
            gw = {
                "metadata": {"name": name},
                "spec": {"environment": env, "agents": {"names": ["hello"]}},
            }
            assert facade.call("POST", f"{ws}/gateways", owner, json=gw).status_code == 201

        def latest() -> int | None:
            obj = facade.call("GET", f"{ws}/agents/hello", owner).json()
            return (obj.get("status") or {}).get("latestRevision")

        wait(lambda: latest() == 1)
        for _ in range(5):  # the operator may write status between our read and write
            current = facade.call("GET", f"{ws}/agents/hello", owner)
            body = current.json()
            body["spec"]["systemPrompt"] = "v2"
            r = facade.call(
                "PUT",
                f"{ws}/agents/hello",
                dev,
                json=body,
                headers={"if-match": current.headers["etag"]},
            )
            if r.status_code != 409:  # a stale ETag: read again, as a client should
                break
        assert r.status_code == 200, r.text
        wait(lambda: latest() == 2)
        revisions = facade.call("GET", f"{ws}/agents/hello/revisions", dev).json()
        assert [(r["revision"], r["spec"]["systemPrompt"]) for r in revisions] == [
            (2, "v2"),
            (1, "v1"),
        ]
        rolled = facade.call("POST", f"{ws}/agents/hello/rollback", dev, json={"revision": 1})
        assert rolled.status_code == 200 and rolled.json()["spec"]["systemPrompt"] == "v1"
        wait(lambda: latest() == 3)

        promotion = {
            "metadata": {"name": f"p-{uuid.uuid4().hex[:6]}"},
            "spec": {
                "agentRef": {"name": "hello"},
                "revision": 3,
                "from": "dev",
                "to": "staging",
                "approval": {
                    "required": True,
                    "approvers": {"users": [f"kaizen:{approver.email}"]},
                },
            },
        }
        name = promotion["metadata"]["name"]
        created = facade.call("POST", f"{ws}/promotions", dev, json=promotion)
        assert created.status_code == 201, created.text

        def phase() -> str | None:
            obj = facade.call("GET", f"{ws}/promotions/{name}", owner).json()
            return (obj.get("status") or {}).get("phase")

        wait(lambda: phase() == "WaitingForApproval")
        refused = facade.call(
            "POST", f"{ws}/promotions/{name}/approve", dev, json={"reason": "me too"}
        )
        assert refused.status_code == 403
        assert f"kaizen:{dev.email}" in refused.json()["detail"]
        approved = facade.call(
            "POST", f"{ws}/promotions/{name}/approve", approver, json={"reason": "looks good"}
        )
        assert approved.status_code == 200, approved.text
        wait(lambda: phase() == "Succeeded")
        status = facade.call("GET", f"{ws}/promotions/{name}", owner).json()["status"]
        assert status["approvals"][0]["user"] == f"kaizen:{approver.email}"
        assert status["approvals"][0]["reason"] == "looks good"
        gateway = facade.call("GET", f"{ws}/gateways/staging/status", owner).json()
        assert gateway["servedRevisions"] == [{"agent": "hello", "revision": 3}]
    finally:
        operator.stop()


def test_pipeline_revisions_and_rollback_through_the_facade(
    facade: Facade, crds: Path, tmp_path: Path
) -> None:
    """The operator's Pipeline revisions, listed and rolled back through the facade by a
    workspace developer, as an Agent's are."""
    owner, dev = facade.user("owner"), facade.user("dev")
    org = facade.org(owner, plan="pro")
    operator, _ = start_operator(
        crds, f"kz-{org}--*", tmp_path / "operator.log", f"kaizen.studio/org={org}"
    )
    try:
        facade.workspace(owner, org, "ml")
        facade.member(owner, org, dev, "developer")
        facade.ws_member(owner, org, "ml", f"user:{dev.email}", "developer")
        ws = f"/orgs/{org}/workspaces/ml"
        for name in ("a", "b"):
            assert facade.call("POST", f"{ws}/agents", dev, json=agent(name)).status_code == 201
        created = facade.call("POST", f"{ws}/pipelines", dev, json=pipeline("flow", "a"))
        assert created.status_code == 201, created.text

        def latest() -> int | None:
            obj = facade.call("GET", f"{ws}/pipelines/flow", dev).json()
            return (obj.get("status") or {}).get("latestRevision")

        wait(lambda: latest() == 1)
        for _ in range(5):  # the operator may write status between our read and write
            current = facade.call("GET", f"{ws}/pipelines/flow", dev)
            body = current.json()
            body["spec"]["steps"].append({"name": "b", "agentRef": {"name": "b"}})
            r = facade.call(
                "PUT",
                f"{ws}/pipelines/flow",
                dev,
                json=body,
                headers={"if-match": current.headers["etag"]},
            )
            if r.status_code != 409:
                break
        assert r.status_code == 200, r.text
        wait(lambda: latest() == 2)
        revisions = facade.call("GET", f"{ws}/pipelines/flow/revisions", dev).json()
        assert [(r["revision"], [s["name"] for s in r["spec"]["steps"]]) for r in revisions] == [
            (2, ["a", "b"]),
            (1, ["a"]),
        ]
        rolled = facade.call("POST", f"{ws}/pipelines/flow/rollback", dev, json={"revision": 1})
        assert rolled.status_code == 200, rolled.text
        assert [s["name"] for s in rolled.json()["spec"]["steps"]] == ["a"]
        wait(lambda: latest() == 3)
    finally:
        operator.stop()
