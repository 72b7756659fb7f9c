"""L1: a resource name in the path is a DNS-1123 subdomain or the request is refused
(422 problem+json naming the parameter) before any apiserver URL is built from it: no
query string (``x%3FdryRun=All``), fragment or dot segment (``.``, ``..``) reaches it."""

from __future__ import annotations

from tests.support.facade import Facade, agent

HOSTILE = ["x%3FdryRun=All&propagationPolicy=Orphan", "x%23frag", "%2E", "%2E%2E", "A", "-x"]


def test_names_that_are_not_dns_subdomains_are_refused(facade: Facade) -> None:
    owner = facade.user("owner")
    org = facade.org(owner)
    facade.workspace(owner, org, "ml")
    base = f"/orgs/{org}/workspaces/ml"
    assert facade.call("POST", f"{base}/agents", owner, json=agent("x")).status_code == 201
    for name in HOSTILE:
        for method, path in (
            ("GET", f"{base}/agents/{name}"),
            ("DELETE", f"{base}/agents/{name}"),
            ("PUT", f"{base}/agents/{name}"),
            ("GET", f"{base}/agents/{name}/revisions"),
            ("GET", f"{base}/pipelines/{name}"),
            ("GET", f"{base}/pipelines/{name}/revisions"),
            ("POST", f"{base}/pipelines/{name}/rollback"),
            ("POST", f"{base}/promotions/{name}/approve"),
            ("GET", f"{base}/gateways/{name}/status"),
        ):
            kw = {"json": agent("x")} if method == "PUT" else {}
            if path.endswith("/approve"):
                kw = {"json": {"reason": "ok"}}
            if path.endswith("/rollback"):
                kw = {"json": {"revision": 1}}
            r = facade.call(method, path, owner, **kw)
            assert r.status_code == 422, (method, path, r.status_code, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            body = r.json()
            assert body["code"] == "invalid-request", body
            assert [e["field"] for e in body["errors"]] == ["path.name"], body
    # The agent is untouched (an orphaning or dry-run delete never ran).
    assert facade.call("GET", f"{base}/agents/x", owner).status_code == 200
